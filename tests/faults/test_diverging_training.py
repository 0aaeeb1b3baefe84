"""A loss that turns NaN stops the run at once with its reason; the run ends FAILED; a sweep goes on."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from helpers import run_tfrexp

TINY = ["model=mlp", "dataset.max_examples_per_split=600", "trainer.epochs=3", "trainer.verbose=0",
        "tracking.log_model=false", "trainer.schedule=constant"]


def test_a_diverging_run_fails_with_its_reason_and_a_sweep_goes_on(tmp_path):
    outputs = tmp_path / "outputs"
    alone = run_tfrexp(*TINY, "trainer.learning_rate=1e12", f"paths.output_dir={outputs}")
    assert alone.returncode != 0
    assert "tfrexp: error: training diverged: loss is" in alone.stderr and "at epoch 1" in alone.stderr
    sweep = run_tfrexp("-m", *TINY, "trainer.learning_rate=1e-3,1e12", f"paths.output_dir={outputs}")
    assert sweep.returncode == 0, sweep.stderr[-2000:]

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    failed = [run for run in runs if run.info.status == "FAILED"]
    assert len(failed) == 2 and all("training diverged" in run.data.tags["error"] for run in failed)
    for run in failed:  # stopped at once: not a single epoch finished
        assert client.get_metric_history(run.info.run_id, "loss") == []
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    [good] = [run for run in runs if run.info.status == "FINISHED" and "mlflow.parentRunId" in run.data.tags]
    assert parent.data.tags["best_run_id"] == good.info.run_id and parent.info.status == "FINISHED"
