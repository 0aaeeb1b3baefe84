"""The MLflow server unreachable at start stops the run before any work; killed during training,
training still finishes, unsent metric values are retried, and what never got through fails the run
loudly and is saved to a file: nothing is dropped silently (a value the server stored but could not confirm as
it died is kept as well). Once the server is back, the next run sends the file to the run it belongs to, each
value once, and ends that run, which the dead server had left RUNNING."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from helpers import REPO, free_port, run_tfrexp, start_mlflow_server, stop_mlflow_server, wait_for

RUN = ["model=cnn_small", "dataset.max_examples_per_split=2500", "trainer.epochs=4", "trainer.verbose=0",
       "tracking.log_model=false"]


def test_unreachable_at_start_stops_before_any_work(tmp_path):
    outputs = tmp_path / "outputs"
    result = run_tfrexp(*RUN, f"tracking.uri=http://127.0.0.1:{free_port()}", f"paths.output_dir={outputs}")
    assert result.returncode == 2 and "the MLflow server does not answer" in result.stderr
    assert not (outputs / "records").exists() and not (outputs / "backups").exists()


def test_killed_mid_run_training_finishes_and_unsent_metrics_are_kept_then_sent(tmp_path):
    port = free_port()
    server, uri = start_mlflow_server(tmp_path / "server.db", tmp_path / "art", port=port)
    outputs = tmp_path / "outputs"
    process = subprocess.Popen([sys.executable, "-m", "tfrexp", *RUN, f"tracking.uri={uri}",
                                f"paths.output_dir={outputs}"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    store = MlflowClient(f"sqlite:///{tmp_path / 'server.db'}")  # the server's own database, read directly

    def first_epoch_stored():
        experiment = store.get_experiment_by_name("tfrexp")
        runs = store.search_runs([experiment.experiment_id]) if experiment else []
        return bool(runs) and bool(store.get_metric_history(runs[0].info.run_id, "val_accuracy"))

    try:
        wait_for(lambda: first_epoch_stored() or process.poll() is not None, 300, "the first epoch's metrics")
        assert process.poll() is None, "training ended before the server could be killed"
    finally:
        stop_mlflow_server(server, kill=True)
    stdout, stderr = process.communicate(timeout=600)

    assert process.returncode == 2, stderr[-2000:]
    assert "stopped answering during the run" in stderr and "training itself finished" in stderr
    [unsent_file] = list(outputs.rglob("unsent_metrics.json"))
    unsent = json.loads(unsent_file.read_text())
    [run] = store.search_runs([store.get_experiment_by_name("tfrexp").experiment_id])
    stored = [point.step for point in store.get_metric_history(run.info.run_id, "val_accuracy")]
    kept = [entry["step"] for entry in unsent if "val_accuracy" in entry["metrics"]]
    # At least once: a value the dying server stored but could not confirm is kept too, so it may be in both.
    assert set(stored) | set(kept) == {1, 2, 3, 4}, "every epoch is in the store or in the file"
    assert kept and max(stored) < 4, "the epochs after the crash are in the file"
    assert any("test_accuracy" in entry["metrics"] for entry in unsent), "training went on to the end"

    # The server back: a later run of the same config, resumed, sends the file to the first run, once.
    server, uri = start_mlflow_server(tmp_path / "server.db", tmp_path / "art", port=port)
    try:
        again = run_tfrexp(*RUN, f"tracking.uri={uri}", f"paths.output_dir={outputs}", "trainer.resume=true")
    finally:
        stop_mlflow_server(server)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [point.step for point in store.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2, 3, 4]
    first = store.get_run(run.info.run_id)
    assert "test_accuracy" in first.data.metrics and first.info.status == "FAILED", "no longer RUNNING"
    assert not list(outputs.rglob("unsent_metrics.json")), "sent, so no longer kept"
