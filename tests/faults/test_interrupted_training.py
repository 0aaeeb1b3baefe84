"""SIGINT, SIGTERM or SIGUSR2 (Slurm's time limit) during fit ends the run KILLED with the last epoch saved;
trainer.resume=true continues it, in the same MLflow run, with no duplicate or missing epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from helpers import REPO, run_tfrexp, wait_for

RUN = ["model=cnn_small", "dataset.max_examples_per_split=2500", "trainer.epochs=4", "trainer.verbose=0",
       "tracking.log_model=false"]


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2])
def test_interrupted_then_resumed_into_the_same_run(tmp_path, signal_number):
    outputs = tmp_path / "outputs"
    process = subprocess.Popen([sys.executable, "-m", "tfrexp", *RUN, f"paths.output_dir={outputs}"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    backups = outputs / "backups"
    wait_for(lambda: backups.is_dir() and any(backups.rglob("training_metadata.json")) or process.poll() is not None,
             300, "the first epoch's backup")
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "trainer.resume=true" in stderr and "Traceback" not in stderr

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiment_id = client.get_experiment_by_name("tfrexp").experiment_id
    [killed] = client.search_runs([experiment_id])
    assert killed.info.status == "KILLED"
    done_before = [point.step for point in client.get_metric_history(killed.info.run_id, "val_accuracy")]
    assert done_before and done_before == list(range(1, len(done_before) + 1)) and len(done_before) < 4

    resumed = run_tfrexp(*RUN, "trainer.resume=true", f"paths.output_dir={outputs}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    [run] = client.search_runs([experiment_id])  # still one run: the same one, continued
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    for metric in ("loss", "val_accuracy", "epoch_seconds"):
        assert [point.step for point in client.get_metric_history(run.info.run_id, metric)] == [1, 2, 3, 4]
    assert "test_accuracy" in run.data.metrics and run.data.tags["resumed"] == "true"
    assert not any(backups.rglob("training_metadata.json")), "a finished run's backup is removed"
