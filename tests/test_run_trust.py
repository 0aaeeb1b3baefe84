"""Runs on the paths beside the golden one: throughput measured on training alone, figures closed, resume
only from a backup, metrics kept on every way a run can end, sweeps whose callbacks fail, the search
direction, and pinned downloads."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import tfrexp
from tfrexp import callbacks as callbacks_module
from tfrexp import job, tracking
from tfrexp.callbacks import EpochMetricsLogger, StopOnDivergence
from tfrexp.errors import ConfigError, TrainingDiverged
from tfrexp.pipeline import ReadyTimes
from tfrexp.sweep import SweepCallback

TINY = ["model=cnn_small", "dataset.max_examples_per_split=600", "trainer.verbose=0", "tracking.log_model=false"]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Model:
    steps_per_execution = 1


def test_throughput_and_input_wait_are_measured_on_training_alone(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(callbacks_module.time, "perf_counter", clock)
    ready = ReadyTimes()
    ready.times = [0.0, 1.5, 2.0, 3.5]  # batch k ready at these times
    buffer = tracking.MetricBuffer()
    logged = []
    monkeypatch.setattr(buffer, "log", lambda metrics, step=0: logged.append(metrics))
    logger = EpochMetricsLogger(examples_per_epoch=400, metrics=buffer, ready=ready)
    logger.set_model(_Model())
    logger.on_epoch_begin(0)
    for end in (1.0, 2.0, 3.0, 4.0):  # four steps; step k+1 waited max(0, ready[k+1] - end[k])
        clock.now = end
        logger.on_train_batch_end(0)
    clock.now = 10.0  # validation takes 6 s: no part of the training throughput
    logger.on_epoch_end(0, {"loss": 1.0})
    [metrics] = logged
    assert metrics["epoch_seconds"] == 10.0 and metrics["train_seconds"] == 4.0
    assert metrics["examples_per_second"] == 100.0
    assert metrics["input_wait_share"] == pytest.approx((0.5 + 0.0 + 0.5) / 4.0)


def test_figures_are_closed_once_logged(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.6]}
    with mlflow.start_run():
        for _ in range(20):  # a long sequential sweep in one process
            tracking.log_report(history, np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"])
    assert plt.get_fignums() == []


def test_resume_skips_a_run_whose_backup_is_gone_and_each_epoch_is_logged_once(tmp_path, data_dir, caplog):
    overrides = [*TINY, "trainer.epochs=2", "trainer.objective=nothing", f"paths.output_dir={tmp_path}",
                 f"paths.data_dir={data_dir}"]
    with pytest.raises(ConfigError, match="trainer.objective='nothing'"):
        tfrexp.run(overrides)  # fails after training, when its backup is already gone
    with pytest.raises(ConfigError, match="trainer.objective='nothing'"):
        tfrexp.run([*overrides, "trainer.resume=true"])
    assert "has no backup to resume from" in caplog.text
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    assert len(runs) == 2, "a run without a backup is not reopened: a new run starts"
    for run in runs:
        assert [point.step for point in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]


def test_unsent_metrics_are_kept_when_a_run_fails_and_a_resumed_run_sends_them(tmp_path, data_dir, monkeypatch):
    overrides = [*TINY, "trainer.epochs=2", f"paths.output_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    real_log_metrics = mlflow.log_metrics

    def store_gone(*args, **kwargs):
        raise MlflowException("the store went away")

    def diverge_in_epoch_two(self, batch, logs=None):
        if self._epoch == 1:
            raise TrainingDiverged("training diverged: loss is nan at epoch 2, batch 1")

    monkeypatch.setattr(mlflow, "log_metrics", store_gone)
    monkeypatch.setattr(StopOnDivergence, "on_train_batch_end", diverge_in_epoch_two)
    with pytest.raises(TrainingDiverged):
        tfrexp.run(overrides)
    [unsent_file] = list(tmp_path.rglob("unsent_metrics.json"))
    kept = json.loads(unsent_file.read_text())
    assert [entry["step"] for entry in kept] == [1] and "val_accuracy" in kept[0]["metrics"]

    monkeypatch.setattr(mlflow, "log_metrics", real_log_metrics)
    monkeypatch.undo()
    resumed = tfrexp.run([*overrides, "trainer.resume=true"])
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert [point.step for point in client.get_metric_history(resumed.run_id, "val_accuracy")] == [1, 2]
    assert not unsent_file.exists(), "sent, so no longer kept"


def _sweep_config(tmp_path, *overrides):
    from omegaconf import open_dict

    cfg = job.compose(f"paths.output_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.mode=MULTIRUN",
                      *overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["trainer.seed=1,2"]
    return cfg


def test_a_sweep_whose_parent_cannot_be_created_stops_in_one_line(tmp_path, capsys):
    from helpers import free_port

    cfg = _sweep_config(tmp_path, f"tracking.uri=http://127.0.0.1:{free_port()}")
    with pytest.raises(SystemExit) as stopped:
        SweepCallback().on_multirun_start(cfg)
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("tfrexp: error: the sweep cannot start: ") and "does not answer" in line


def test_the_parent_run_ends_failed_with_the_reason_when_the_end_of_sweep_step_fails(tmp_path, monkeypatch):
    cfg = _sweep_config(tmp_path)
    SweepCallback().on_multirun_start(cfg)
    parent_id = json.loads((tmp_path / "sweep" / "mlflow_sweep.json").read_text())["parent_run_id"]

    def broken(*args, **kwargs):
        raise MlflowException("search failed")

    monkeypatch.setattr(MlflowClient, "search_runs", broken)
    SweepCallback().on_multirun_end(cfg)
    parent = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(parent_id)
    assert parent.info.status == "FAILED" and "search failed" in parent.data.tags["error"]


@pytest.mark.parametrize(("direction", "optuna"), [("max", "maximize"), ("min", "minimize")])
def test_the_search_direction_follows_the_objective_direction(tmp_path, direction, optuna):
    cfg = job.compose("hparams_search=mnist_optuna", f"trainer.objective_direction={direction}",
                      f"paths.output_dir={tmp_path}", return_hydra_config=True)
    assert str(cfg.hydra.sweeper.direction) == optuna


def test_downloads_are_pinned_by_digest(make_settings):
    from tfrexp import sources

    for name in ("mnist", "fashion_mnist"):
        settings = sources.build(make_settings(f"dataset={name}").dataset).settings
        assert sorted(settings.archive_sha256) == sorted(f"{pair[kind]}" for pair in settings.files.values()
                                                         for kind in ("images", "labels")), name
        assert settings.mirror.startswith("https://") or name == "fashion_mnist"
