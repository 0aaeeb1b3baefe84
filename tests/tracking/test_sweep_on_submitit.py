"""A sweep through the Slurm launcher's code path, with submitit's local executor in place of the scheduler:
each job a process of its own, one MLflow parent run with a child per job, and submitit's logs per job; and an
Optuna search through it whose trials report to the study."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient

from helpers import run_tfrexp

pytestmark = pytest.mark.slow


def test_a_sweep_through_submitit(tmp_path):
    outputs = tmp_path / "outputs"
    result = run_tfrexp("-m", "hydra/launcher=slurm_local", "trainer.learning_rate=0.001,0.003",
                        "model=cnn_small", "dataset.max_examples_per_split=300", "trainer.epochs=2",
                        "trainer.verbose=0", "tracking.log_model=false", f"paths.output_dir={outputs}")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(run.info.run_name for run in children) == ["mnist-cnn_small-lr=0.001", "mnist-cnn_small-lr=0.003"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    for run in children:
        assert [point.step for point in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    [sweep_dir] = (outputs / "multiruns").iterdir()
    job_logs = sorted((sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 2 and all("test_accuracy" in log.read_text() for log in job_logs)

    # A search through the same launcher: each trial, a process of its own, reports every epoch to the study.
    search = run_tfrexp("-m", "hparams_search=mnist_optuna", "hydra/launcher=slurm_local", "hydra.sweeper.n_trials=2",
                        "hydra/sweeper/pruner=none", "model=cnn_small", "dataset.max_examples_per_split=300",
                        "trainer.epochs=2", "trainer.verbose=0", "tracking.log_model=false",
                        f"paths.output_dir={outputs}")
    assert search.returncode == 0, search.stderr[-3000:]
    trials = optuna.load_study(study_name="mnist_optuna", storage=f"sqlite:///{outputs}/optuna.db").trials
    assert [(trial.state.name, sorted(trial.intermediate_values)) for trial in trials] == [("COMPLETE", [1, 2])] * 2


def test_the_slurm_launcher_asks_for_one_gpu_an_hour_and_leaves_the_partition_to_the_user(tmp_path):
    from hydra.utils import get_class

    from tfrexp import run_context

    cfg = run_context.compose("hydra/launcher=slurm", f"paths.output_dir={tmp_path}", return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.timeout_min, launcher.partition) == (1, 60, None)
