"""The sweep callback and the names of a sweep's runs, in-process against a SQLite store (the real sweeps
run end to end in test_sweep_runs.py)."""

from __future__ import annotations

import contextlib
import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from mlflow.exceptions import MlflowException

from tfrexp import run_context
from tfrexp.config.schema import TrackingConfig
from tfrexp.tracking import run as tracking_run
from tfrexp.tracking import store
from tfrexp.tracking.names import job_identity, read_sweep_file
from tfrexp.tracking.sweep import SweepCallback


def _sweep_config(tmp_path, *overrides, task=("model=cnn_small", "trainer.learning_rate=0.001,0.003")):
    """The composed config of a sweep's master, as the sweep callback gets it, sweeping `task`."""
    cfg = run_context.compose(f"paths.output_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                              "hydra.mode=MULTIRUN", *overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = list(task)
    return cfg


def test_a_sweep_is_a_parent_run_that_ends_with_its_best_child(tmp_path):
    cfg = _sweep_config(tmp_path)
    SweepCallback().on_multirun_start(cfg)
    sweep = read_sweep_file(tmp_path / "sweep")
    assert sweep["swept_keys"] == ["trainer.learning_rate"]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    parent = client.get_run(sweep["parent_run_id"])
    assert parent.info.status == "RUNNING" and parent.data.params["sweep.swept_keys"] == "trainer.learning_rate"

    experiment_id = store.connect(TrackingConfig(uri=uri))
    for number, (rate, accuracy) in enumerate([("0.001", 0.91), ("0.003", 0.95)]):
        with open_dict(cfg):
            cfg.hydra.overrides.task = ["model=cnn_small", f"trainer.learning_rate={rate}"]
            cfg.hydra.job.num = number
        identity = job_identity(cfg.hydra, "mnist", "cnn_small", None)
        assert identity.run_name == f"mnist-cnn_small-lr={rate}"
        assert identity.parent_run_id == parent.info.run_id and identity.tags["sweep.job"] == str(number)
        with tracking_run.start_run(experiment_id, identity.run_name, identity.tags, identity.parent_run_id):
            mlflow.log_metric("val_accuracy", accuracy)

    SweepCallback().on_multirun_end(cfg)
    ended = client.get_run(parent.info.run_id)
    assert ended.info.status == "FINISHED" and ended.data.metrics["best_val_accuracy"] == 0.95
    assert ended.data.tags["best_run_name"] == "mnist-cnn_small-lr=0.003"
    assert ended.data.metrics["sweep.children"] == 2 and ended.data.metrics["sweep.finished"] == 2


def test_a_second_sweep_in_the_same_folder_is_refused_before_it_makes_a_parent(tmp_path, capsys):
    """Two sweeps started in the same second shared a folder: the second's sweep file replaced the first's,
    and the first sweep's parent run never ended."""
    cfg = _sweep_config(tmp_path)
    SweepCallback().on_multirun_start(cfg)
    first = read_sweep_file(tmp_path / "sweep")
    with pytest.raises(SystemExit) as stopped:
        SweepCallback().on_multirun_start(cfg)
    assert stopped.value.code == 2 and "holds a running sweep" in capsys.readouterr().err
    assert read_sweep_file(tmp_path / "sweep") == first
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert len(client.search_runs([first["experiment_id"]])) == 1, "no second parent run"

    # Once the first has ended, the folder takes the same command again (a fixed hydra.sweep.dir).
    SweepCallback().on_multirun_end(cfg)
    assert client.get_run(first["parent_run_id"]).info.status in {"FINISHED", "FAILED"}
    SweepCallback().on_multirun_start(cfg)
    assert read_sweep_file(tmp_path / "sweep")["parent_run_id"] != first["parent_run_id"]
    SweepCallback().on_multirun_end(cfg)  # a sweep with no job: it ends FINISHED and frees the folder


def test_a_sweep_with_no_job_finishes_and_one_whose_jobs_all_failed_says_so(tmp_path):
    """A search called again with nothing left to run ended its parent FAILED; one whose every job failed
    ended FAILED without a reason."""
    cfg = _sweep_config(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    SweepCallback().on_multirun_start(cfg)
    empty = read_sweep_file(tmp_path / "sweep")["parent_run_id"]
    SweepCallback().on_multirun_end(cfg)
    assert client.get_run(empty).info.status == "FINISHED"

    SweepCallback().on_multirun_start(cfg)
    sweep = read_sweep_file(tmp_path / "sweep")
    experiment_id = store.connect(TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db"))
    with open_dict(cfg):
        cfg.hydra.job.num = 0
    identity = job_identity(cfg.hydra, "mnist", "cnn_small", None)
    with pytest.raises(RuntimeError):
        with tracking_run.start_run(experiment_id, identity.run_name, identity.tags, identity.parent_run_id):
            raise RuntimeError("diverged")
    with pytest.raises(SystemExit) as failed:
        SweepCallback().on_multirun_end(cfg)
    assert failed.value.code == 2, "a sweep none of whose jobs finished fails"
    parent = client.get_run(sweep["parent_run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["error"] == "none of the 1 jobs finished"


def test_a_sweep_that_cannot_start_leaves_its_folder_free(tmp_path):
    from helpers import free_port

    cfg = _sweep_config(tmp_path, f"tracking.uri=http://127.0.0.1:{free_port()}")
    with pytest.raises(SystemExit):
        SweepCallback().on_multirun_start(cfg)
    assert read_sweep_file(tmp_path / "sweep") is None


def test_a_child_is_named_by_what_differs_once(tmp_path):
    """A sweep over models named the model twice (`mnist-cnn-model=cnn-learning_rate=0.003`); a search's
    floats were written in full."""
    cfg = run_context.compose(f"paths.output_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.mode=MULTIRUN",
                      return_hydra_config=True)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "mlflow_sweep.json").write_text(
        '{"sweep_id": "s", "parent_run_id": "p", "swept_keys": '
        '["model", "trainer.learning_rate", "pipeline.batch_size", "model.dropout", "trainer.dropout"]}')
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["model=cnn", "trainer.learning_rate=0.003", "pipeline.batch_size=64",
                                    "+model.dropout=0.19902212766", "trainer.dropout=0.2", "trainer.epochs=2"]
        cfg.hydra.job.num = 0
    identity = job_identity(cfg.hydra, "mnist", "cnn", None)
    (tmp_path / "sweep" / "mlflow_sweep.json").unlink()  # no sweep to end: the file stood in for one
    assert identity.run_name == "mnist-cnn-lr=0.003-batch=64-model.dropout=0.199-trainer.dropout=0.2"


def test_a_plain_run_has_no_parent_and_a_plain_name(tmp_path):
    cfg = run_context.compose(f"paths.output_dir={tmp_path}", "tracking.run_name=mine", return_hydra_config=True)
    identity = job_identity(cfg.hydra, "mnist", "cnn", cfg.tracking.run_name)
    assert (identity.run_name, identity.parent_run_id) == ("mine", None)
    assert {"git.commit", "git.dirty", "hydra.overrides", "model"} <= set(identity.tags)


def test_the_parent_holds_a_summary_of_every_child_and_a_plot_of_the_objective(tmp_path):
    import csv
    import io

    cfg = _sweep_config(tmp_path)
    SweepCallback().on_multirun_start(cfg)
    sweep = read_sweep_file(tmp_path / "sweep")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = store.connect(TrackingConfig(uri=uri))
    for number, (rate, accuracy) in enumerate([("0.001", 0.91), ("0.003", 0.95), ("0.03", None)]):
        with open_dict(cfg):
            cfg.hydra.overrides.task = ["model=cnn_small", f"trainer.learning_rate={rate}"]
            cfg.hydra.job.num = number
        identity = job_identity(cfg.hydra, "mnist", "cnn_small", None)
        with pytest.raises(RuntimeError) if accuracy is None else contextlib.nullcontext():
            with tracking_run.start_run(experiment_id, identity.run_name, identity.tags, identity.parent_run_id):
                mlflow.log_param("trainer.learning_rate", rate)
                if accuracy is None:
                    raise RuntimeError("diverged")
                mlflow.log_metrics({"val_accuracy": accuracy, "test_accuracy": accuracy - 0.01})
    SweepCallback().on_multirun_end(cfg)
    client = MlflowClient(uri)
    parent_id = sweep["parent_run_id"]
    assert {item.path for item in client.list_artifacts(parent_id)} >= {"sweep_summary.csv", "sweep_objective.png"}
    with open(client.download_artifacts(parent_id, "sweep_summary.csv", str(tmp_path)), newline="") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    assert [(row["trainer.learning_rate"], row["status"], row["val_accuracy"]) for row in rows] == [
        ("0.001", "FINISHED", "0.91"), ("0.003", "FINISHED", "0.95"), ("0.03", "FAILED", "")]
    assert rows[1]["test_accuracy"] == "0.94" and all(row["run_id"] and row["duration_s"] for row in rows)
    with open(client.download_artifacts(parent_id, "sweep_objective.png", str(tmp_path)), "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_whose_parent_cannot_be_created_stops_in_one_line(tmp_path, capsys):
    from helpers import free_port

    cfg = _sweep_config(tmp_path, f"tracking.uri=http://127.0.0.1:{free_port()}", task=["trainer.seed=1,2"])
    with pytest.raises(SystemExit) as stopped:
        SweepCallback().on_multirun_start(cfg)
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("tfrexp: error: the sweep cannot start: ") and "does not answer" in line


def test_the_parent_run_ends_failed_with_the_reason_when_the_end_of_sweep_step_fails(tmp_path, monkeypatch):
    cfg = _sweep_config(tmp_path, task=["trainer.seed=1,2"])
    SweepCallback().on_multirun_start(cfg)
    parent_id = json.loads((tmp_path / "sweep" / "mlflow_sweep.json").read_text())["parent_run_id"]

    def broken(*args, **kwargs):
        raise MlflowException("search failed")

    monkeypatch.setattr(MlflowClient, "search_runs", broken)
    with pytest.raises(SystemExit):  # the parent failed, and so does the command
        SweepCallback().on_multirun_end(cfg)
    parent = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(parent_id)
    assert parent.info.status == "FAILED" and "search failed" in parent.data.tags["error"]


def test_a_parent_is_named_by_the_models_and_datasets_it_sweeps(tmp_path):
    cfg = _sweep_config(tmp_path, task=["model=cnn_small,cnn", "trainer.learning_rate=0.001,0.003"])
    SweepCallback().on_multirun_start(cfg)
    sweep = read_sweep_file(tmp_path / "sweep")
    parent = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(sweep["parent_run_id"])
    assert parent.info.run_name == f"sweep-mnist-cnn_small,cnn-{sweep['sweep_id']}"
    SweepCallback().on_multirun_end(cfg)


def test_a_sweep_pins_its_paths_for_jobs_that_run_elsewhere_even_when_absolute(tmp_path, monkeypatch):
    """Absolute TFREXP_OUTPUT_DIR / TFREXP_DATA_DIR were left for each job to look up again: a Ray job (the head's
    environment) wrote into the head's folder, away from its parent, or found no data."""
    from tfrexp.tracking.sweep import with_absolute_paths

    monkeypatch.setenv("TFREXP_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("TFREXP_DATA_DIR", str(tmp_path))
    cfg = run_context.compose("hydra.mode=MULTIRUN", return_hydra_config=True)
    pinned = with_absolute_paths(cfg, ["trainer.seed=1,2"])
    assert pinned[:1] == ["trainer.seed=1,2"]
    assert f"paths.output_dir={tmp_path / 'out'}" in pinned and f"paths.data_dir={tmp_path}" in pinned
    [sweep_dir] = [argument for argument in pinned if argument.startswith("hydra.sweep.dir=")]
    assert sweep_dir == f"hydra.sweep.dir={cfg.hydra.sweep.dir}" and sweep_dir.startswith(
        f"hydra.sweep.dir={tmp_path / 'out'}/multiruns/")
