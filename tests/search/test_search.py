"""Searches with our Optuna sweeper, end to end: a pruned trial stops early and is recorded as such in the study,
in MLflow and in the sweep's summary; optuna-dashboard, a real Optuna client, reads the study; a study an older
Optuna made gets one line saying how to continue it, and continues once upgraded."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from helpers import free_port, is_loopback, listening_addresses, run_tfrexp, wait_for

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]
TINY = ["model=cnn_small", "dataset.max_examples_per_split=300", "trainer.verbose=0", "tracking.log_model=false",
        "tracking.system_metrics=false"]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_a_pruned_trial_stops_early_and_every_record_says_so(tmp_path):
    outputs = tmp_path / "outputs"
    result = run_tfrexp("-m", f"hydra.searchpath=[file://{TESTS / 'conf'}]", "hparams_search=optuna_pruned_at_epoch_2",
                        *TINY, f"paths.output_dir={outputs}")
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{outputs}/optuna.db"
    trials = optuna.load_study(study_name="mnist_optuna", storage=storage).trials
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert [sorted(trial.intermediate_values) for trial in trials] == [[1, 2], [1, 2]], "stopped after epoch 2 of 3"

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep.pruned"] == 2
    assert "best_run_id" not in parent.data.tags, "a pruned trial is no candidate for the best"
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["search.pruned"] == "true"
        assert run.data.params["search.pruned_at_epoch"] == "2"
        assert [point.step for point in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert sorted(run.data.params["search.trial"] for run in children) == ["0", "1"]
    with open(client.download_artifacts(parent.info.run_id, "sweep_summary.csv", str(tmp_path))) as handle:
        assert [row["pruned_at_epoch"] for row in csv.DictReader(handle)] == ["2", "2"]

    # optuna-dashboard, started as a user would beside the MLflow UI, sees the study, its trials and epochs.
    port = free_port()
    # As the README says it, from the project folder (tmp_path), on a free port rather than its 8080.
    dashboard = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), "sqlite:///outputs/optuna.db",
                                  "--port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: dashboard.poll() is not None or listening_addresses(dashboard.pid), 60, "optuna-dashboard")
        assert dashboard.poll() is None, dashboard.stderr.read().decode()[-2000:]
        assert all(is_loopback(address) for address in listening_addresses(dashboard.pid))
        studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        [study] = [study for study in studies if study["study_name"] == "mnist_optuna"]
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
        assert [trial["state"] for trial in detail["trials"]] == ["Pruned", "Pruned"]
        assert [[value["step"] for value in trial["intermediate_values"]] for trial in detail["trials"]] == [[1, 2]] * 2
        assert {trial["params"][0]["name"] for trial in detail["trials"]} <= {
            "trainer.learning_rate", "pipeline.batch_size", "model.dropout"}
    finally:
        os.killpg(dashboard.pid, signal.SIGTERM)
        dashboard.wait(timeout=30)


def test_a_study_made_by_optuna_2_says_how_to_continue_and_continues_once_upgraded(tmp_path):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    shutil.copy(TESTS / "data" / "optuna-2.10.db", outputs / "optuna.db")  # 2 trials of mnist_optuna, Optuna 2.10.1
    storage = f"sqlite:///{outputs}/optuna.db"
    search = ["-m", "hparams_search=mnist_optuna", *TINY, "trainer.epochs=1", f"paths.output_dir={outputs}",
              "hydra.sweeper.n_trials=3"]
    refused = run_tfrexp(*search)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()[-1:]
    assert f"made by an older Optuna (its schema: optuna 2.10.1); upgrade it in place with `optuna storage upgrade " \
           f"--storage {storage}`" in line and "Traceback" not in refused.stderr

    upgrade = subprocess.run([str(Path(sys.executable).parent / "optuna"), "storage", "upgrade", "--storage", storage],
                             capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr[-2000:]
    again = run_tfrexp(*search)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already holds 2 finished trials of 3: running the other 1" in again.stdout
    trials = optuna.load_study(study_name="mnist_optuna", storage=storage).trials
    assert len(trials) == 3 and trials[2].state == optuna.trial.TrialState.COMPLETE
