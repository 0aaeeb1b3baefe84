"""A run's life and what it logs (tracking/store.py, run.py, metrics.py) against a real SQLite MLflow store in
a temporary folder; and, through the Python API, resume only from a backup and metrics kept on every way a run
can end."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import tfrexp
from tfrexp import stop_signals
from tfrexp.config.schema import TrackingConfig
from tfrexp.errors import TrainingDiverged
from tfrexp.tracking import metrics
from tfrexp.tracking import store as tracking_store
from tfrexp.tracking import run as tracking_run
from tfrexp.training.callbacks import StopOnDivergence

TINY = ["model=cnn_small", "dataset.max_examples_per_split=600", "trainer.verbose=0", "tracking.log_model=false"]


@pytest.fixture
def store(tmp_path):
    settings = TrackingConfig(uri=f"sqlite:///{tmp_path}/store/mlflow.db", experiment="unit",
                              artifact_location=str(tmp_path / "artifacts"))
    experiment_id = tracking_store.connect(settings)
    yield settings, experiment_id, MlflowClient(settings.uri)
    mlflow.end_run()


def test_connect_creates_the_store_folder_and_the_experiment_once(store, tmp_path):
    settings, experiment_id, client = store
    assert (tmp_path / "store" / "mlflow.db").is_file()
    assert tracking_store.connect(settings) == experiment_id
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == "unit" and experiment.artifact_location == (tmp_path / "artifacts").as_uri()


def test_a_new_store_is_one_line_of_ours_not_mlflows_two(tmp_path, capfd, caplog):
    """A first run printed MLflow's "Creating initial MLflow database tables..." and "Updating database
    tables" before its first step."""
    settings = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="new")
    with caplog.at_level(logging.INFO, logger="tfrexp.tracking.store"):
        tracking_store.connect(settings)
        tracking_store.connect(settings)  # the store is there now: nothing to say
    said = [record.getMessage() for record in caplog.records if record.name == "tfrexp.tracking.store"]
    assert len(said) == 1 and said[0].startswith(f"new MLflow store {settings.uri}: its tables made in ")
    printed = capfd.readouterr().err
    assert "Creating initial MLflow database tables" not in printed and "Updating database tables" not in printed
    assert not logging.getLogger("mlflow.store.db.utils").filters  # MLflow's logger as it was


def test_a_store_folder_that_cannot_be_made_is_one_line():
    """A FileNotFoundError traceback. Whoever may write in /proc (root) gets past the config check, to here."""
    from tfrexp.errors import TfrexpError

    with pytest.raises(TfrexpError, match=r"^tracking.uri='sqlite:////proc/nope/mlflow.db': cannot (be )?create"):
        tracking_store.connect(TrackingConfig(uri="sqlite:////proc/nope/mlflow.db"))


@pytest.mark.parametrize(("raised", "status"), [(None, "FINISHED"), (ValueError("bad value"), "FAILED"),
                                                (KeyboardInterrupt(), "KILLED")])
def test_a_run_ends_finished_failed_or_killed(store, raised, status):
    _, experiment_id, client = store
    with pytest.raises(type(raised)) if raised else contextlib.nullcontext():
        with tracking_run.start_run(experiment_id, "r", {"a": "1"}) as run:
            if raised:
                raise raised
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == status and ended.data.tags["a"] == "1"
    if status == "FAILED":
        assert ended.data.tags["error"] == "ValueError: bad value"
        assert {item.path for item in client.list_artifacts(run.info.run_id)} == {"error.txt"}



def test_resume_finds_the_newest_interrupted_run_of_the_same_config(store):
    _, experiment_id, client = store
    digest = tracking_run.config_digest({"trainer": {"epochs": 2, "resume": False}})
    assert digest == tracking_run.config_digest({"trainer": {"epochs": 2, "resume": True}}), "resume is not identity"
    assert digest != tracking_run.config_digest({"trainer": {"epochs": 3, "resume": False}})
    with pytest.raises(KeyboardInterrupt):
        with tracking_run.start_run(experiment_id, "first", {"config.digest": digest}):
            raise KeyboardInterrupt
    with tracking_run.start_run(experiment_id, "done", {"config.digest": digest}):
        pass
    [killed] = [run for run in client.search_runs([experiment_id]) if run.info.status == "KILLED"]
    assert tracking_run.find_interrupted_run(experiment_id, digest) == killed.info.run_id
    assert tracking_run.find_interrupted_run(experiment_id, "another") is None
    with tracking_run.start_run(experiment_id, "again", {}, resume_run_id=killed.info.run_id) as resumed:
        assert resumed.info.run_id == killed.info.run_id
    assert client.get_run(killed.info.run_id).data.tags["resumed"] == "true"


def test_a_resumed_run_that_runs_on_other_devices_keeps_its_params_and_tags_the_new_ones(store):
    """MLflow refuses to change a param: a sweep job resumed in another worker (another GPU) failed there."""
    _, experiment_id, client = store
    with pytest.raises(KeyboardInterrupt):
        with tracking_run.start_run(experiment_id, "first", {}) as active:
            tracking_run.TrackedRun(active.info.run_id, experiment_id, resumed=False).log_params(
                {"runtime.visible_devices": "0", "runtime.replicas": 1})
            raise KeyboardInterrupt
    with tracking_run.start_run(experiment_id, "again", {}, resume_run_id=active.info.run_id):
        tracking_run.TrackedRun(active.info.run_id, experiment_id, resumed=True).log_params(
            {"runtime.visible_devices": "1", "runtime.replicas": 1, "runtime.new": "x"})
    run = client.get_run(active.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"runtime.visible_devices": "0", "runtime.replicas": "1", "runtime.new": "x"}
    assert run.data.tags["resumed.runtime.visible_devices"] == "1"


def test_params_are_flattened_dotted_keys_with_lists_in_one_line():
    assert tracking_run.flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": "x", "e": "1, 2"}


def test_our_experiments_are_marked_as_model_training(store):
    settings, experiment_id, client = store
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    other = client.create_experiment("made-elsewhere")
    tracking_store.connect(TrackingConfig(uri=settings.uri, experiment="made-elsewhere"))
    assert client.get_experiment(other).tags["mlflow.experimentKind"] == "custom_model_development"


def test_system_metrics_are_sampled_every_second(store):
    import time

    _, experiment_id, client = store
    with tracking_run.start_run(experiment_id, "s", {}, system_metrics=True) as run:
        time.sleep(3.5)
    points = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert len(points) >= 2 and all(0 <= point.value <= 100 * 64 for point in points)


def test_metric_buffer_keeps_what_the_store_refuses_and_writes_it_out(store, tmp_path, monkeypatch):
    _, experiment_id, client = store
    buffer = metrics.MetricBuffer(tmp_path / "unsent.json")
    with tracking_run.start_run(experiment_id, "m", {}) as run:
        buffer.log({"loss": 1.0}, step=1)
        real = mlflow.log_metrics

        def refuse(*args, **kwargs):
            raise MlflowException("store gone")

        monkeypatch.setattr(mlflow, "log_metrics", refuse)
        buffer.log({"loss": 0.5}, step=2)
        assert buffer.unsent() == [{"step": 2, "metrics": {"loss": 0.5}}]
        monkeypatch.setattr(mlflow, "log_metrics", real)
        buffer.log({"loss": 0.25}, step=3)  # the retry sends the kept value first, in order
        assert buffer.unsent() == []
        buffer.give_up("uri")  # nothing left: no file, no error
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(1, 1.0), (2, 0.5),
                                                                                             (3, 0.25)]
    assert not (tmp_path / "unsent.json").exists()
    monkeypatch.setattr(mlflow, "log_metrics", refuse)
    buffer.log({"loss": 0.1}, step=4)
    with pytest.raises(tracking_store.TrackingError, match="1 sets of metric values were not stored"):
        buffer.give_up("uri")
    assert json.loads((tmp_path / "unsent.json").read_text()) == [{"step": 4, "metrics": {"loss": 0.1}}]


def test_a_store_refusal_with_no_message_is_kept_and_named_by_its_type(monkeypatch, caplog):
    """A dropped connection can raise an OSError with an empty message: the warning's first line was taken from
    the message (IndexError), so the metrics the buffer promises to keep were lost with the run."""
    def refuse(*args, **kwargs):
        raise ConnectionResetError()

    monkeypatch.setattr(mlflow, "log_metrics", refuse)
    buffer = metrics.MetricBuffer()
    with caplog.at_level("WARNING", logger=metrics.__name__):
        buffer.log({"loss": 0.5}, step=2)
    assert buffer.unsent() == [{"step": 2, "metrics": {"loss": 0.5}}]
    assert "does not take metrics (ConnectionResetError)" in caplog.text


def test_a_run_the_sweep_already_ended_keeps_the_sweeps_reason_when_its_job_is_stopped(store):
    """A Ray job's run is ended by the sweep's driver, which cannot reach the worker; Ray stops the worker after
    the driver has left, and the job's own "interrupted" overwrote the sweep's reason when the worker's grace
    was long enough to write it (a failed CI run)."""
    from tfrexp.tracking.sweep import _end_orphans

    _, experiment_id, client = store
    with pytest.raises(KeyboardInterrupt):
        with tracking_run.start_run(experiment_id, "job", {}) as active:
            _end_orphans(client, [client.get_run(active.info.run_id)], "KILLED", "interrupted")
            raise KeyboardInterrupt
    ended = client.get_run(active.info.run_id)
    assert (ended.info.status, ended.data.tags["error"]) == ("KILLED", "the sweep ended before this job: interrupted")
    assert mlflow.active_run() is None


def test_a_stop_signal_during_a_store_write_lets_the_write_finish_then_ends_the_run_killed(store, monkeypatch):
    """A signal raised inside the SQL store's session left SQLite's write lock with the process: the run's end
    and the sweep's end then failed (`database is locked`) and the sweep's parent stayed RUNNING (seen in the
    interrupted-sweep test). Now the write finishes, then the signal stops the run."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    _, experiment_id, client = store
    real = SqlAlchemyStore.log_batch

    def signalled_as_it_writes(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    with stop_signals.handled((signal.SIGINT,), lambda signum, frame: stop_signals.interrupt(signum)):
        with pytest.raises(KeyboardInterrupt):
            with tracking_run.start_run(experiment_id, "w", {}) as active:
                tracked = tracking_run.TrackedRun(active.info.run_id, experiment_id, resumed=False)
                monkeypatch.setattr(SqlAlchemyStore, "log_batch", signalled_as_it_writes)
                tracked.log_params({"batch_size": 64})
                pytest.fail("the signal did not stop the run")
    run = client.get_run(active.info.run_id)
    assert run.data.params == {"batch_size": "64"} and run.info.status == "KILLED"


def test_a_stop_signal_as_the_run_is_created_ends_it_killed(store, monkeypatch):
    """Held back while the run is created, the signal is raised once it exists: it must end KILLED, not stay
    RUNNING because it came before the part that ends a run."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    _, experiment_id, client = store
    real = SqlAlchemyStore.create_run

    def signalled_as_it_creates(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "create_run", signalled_as_it_creates)
    with stop_signals.handled((signal.SIGINT,), lambda signum, frame: stop_signals.interrupt(signum)):
        with pytest.raises(KeyboardInterrupt):
            with tracking_run.start_run(experiment_id, "c", {}):
                pytest.fail("the signal did not stop the run")
    [run] = client.search_runs([experiment_id])
    assert (run.info.status, run.data.tags["error"]) == ("KILLED", "interrupted")


def test_a_stop_signal_during_the_last_retry_comes_after_the_unsent_metrics_are_written(monkeypatch, tmp_path):
    """The retry in `keep` is a store write a signal waits for; raised at its end, the signal came before the
    file was written, and the kept values were lost."""
    monkeypatch.setattr(mlflow, "log_metrics", lambda *args, **kwargs: (_ for _ in ()).throw(MlflowException("gone")))
    buffer = metrics.MetricBuffer(tmp_path / "unsent.json")
    buffer.log({"loss": 0.5}, step=1)

    def signalled_and_gone(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        raise MlflowException("still gone")

    monkeypatch.setattr(mlflow, "log_metrics", signalled_and_gone)
    with stop_signals.handled((signal.SIGINT,), lambda signum, frame: stop_signals.interrupt(signum)):
        with pytest.raises(KeyboardInterrupt):
            buffer.keep()
    assert json.loads((tmp_path / "unsent.json").read_text()) == [{"step": 1, "metrics": {"loss": 0.5}}]


def test_a_dataset_input_names_the_records_by_fingerprint(store, tmp_path):
    _, experiment_id, client = store
    with tracking_run.start_run(experiment_id, "d", {}) as run:
        tracking_run.log_datasets(tmp_path, "mnist", "0123456789abcdef", ["train", "test"])
    inputs = {item.dataset.name: item for item in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert sorted(inputs) == ["mnist-test", "mnist-train"]
    assert inputs["mnist-train"].dataset.digest == "0123456789abcdef"
    assert inputs["mnist-train"].tags[0].value == "training" and inputs["mnist-test"].tags[0].value == "test"
    assert inputs["mnist-train"].dataset.source_type == "local"


@pytest.mark.parametrize("refusal", [
    "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint \"dataset_pk\"",
    "(psycopg.errors.DeadlockDetected) deadlock detected",
    "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name",
])
def test_parallel_runs_that_race_on_logging_the_same_dataset_retry(store, tmp_path, monkeypatch, refusal):
    """PostgreSQL words the race on the dataset's key (and a deadlock between two such inserts) otherwise than
    SQLite: a job behind a shared server lost it and ended FAILED."""
    _, experiment_id, client = store
    real, calls = mlflow.log_inputs, []

    def lose_the_race_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException(refusal)
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_inputs", lose_the_race_once)
    with tracking_run.start_run(experiment_id, "race", {}) as run:
        tracking_run.log_datasets(tmp_path, "mnist", "0123456789abcdef", ["train"])
    assert len(calls) == 2 and len(client.get_run(run.info.run_id).inputs.dataset_inputs) == 1


def test_an_experiment_created_by_another_process_meanwhile_is_used(tmp_path, monkeypatch):
    """Two sweeps starting at once against a server: the slower one's create_experiment met the other's
    experiment (RESOURCE_ALREADY_EXISTS, mlflow issue 4123) and the sweep could not start."""
    uri = f"sqlite:///{tmp_path}/race.db"
    settings = TrackingConfig(uri=uri, experiment="raced")
    real = mlflow.get_experiment_by_name
    looks = []

    def not_yet_then_real(name):  # the other process creates it between our look and our create
        looks.append(name)
        if len(looks) == 1:
            MlflowClient(uri).create_experiment(name)
            return None
        return real(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", not_yet_then_real)
    experiment_id = tracking_store.connect(settings)
    assert experiment_id == MlflowClient(uri).get_experiment_by_name("raced").experiment_id


def test_where_to_look_names_the_ui_command(tmp_path, monkeypatch):
    assert tracking_store.where_to_look("http://h:5000", "1", "r").startswith("http://h:5000/#/experiments/1/runs/r")
    monkeypatch.chdir(Path(tracking_store.__file__).parents[2])  # the checkout, whose Makefile has `ui`
    assert "make ui" in tracking_store.where_to_look(tracking_store.DEFAULT_STORE, "1", "r")
    monkeypatch.chdir(tmp_path)  # a project of the user's: no such target there (it was `make ui` too)
    assert "`mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db`" in tracking_store.where_to_look(
        tracking_store.DEFAULT_STORE, "1", "r")
    assert "mlflow ui --backend-store-uri sqlite:///x.db" in tracking_store.where_to_look("sqlite:///x.db", "1", "r")


def test_figures_are_closed_once_logged(store):
    _, experiment_id, _ = store  # its artifacts in the test's folder (a new store's Default: ./mlruns here)
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.6]}
    with tracking_run.start_run(experiment_id, "f", {}) as active:
        tracked = tracking_run.TrackedRun(active.info.run_id, experiment_id, resumed=False)
        for _ in range(20):  # a long sequential sweep in one process
            tracked.log_report(history, np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"])
    assert plt.get_fignums() == []


def test_resume_skips_a_run_whose_backup_is_gone_and_each_epoch_is_logged_once(tmp_path, data_dir, caplog,
                                                                              monkeypatch):
    overrides = [*TINY, "trainer.epochs=2", f"paths.output_dir={tmp_path}", f"paths.data_dir={data_dir}"]

    def fails_after_training(*args, **kwargs):
        raise ValueError("after training")

    monkeypatch.setattr(tracking_run.TrackedRun, "log_report", fails_after_training)
    with pytest.raises(ValueError, match="after training"):
        tfrexp.run(overrides)  # fails after training, when its backup is already gone
    with pytest.raises(ValueError, match="after training"):
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


def test_an_objective_on_a_split_the_records_lack_stops_the_run_before_training(tmp_path, data_dir):
    """With dataset.validation_fraction=0, the default objective val_accuracy failed the run after training."""
    from tfrexp.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        tfrexp.run([*TINY, "dataset.validation_fraction=0", f"paths.output_dir={tmp_path}",
                    f"paths.data_dir={data_dir}"])
    assert str(refused.value) == ("trainer.objective='val_accuracy': the records have no validation split (they have "
                                  "train, test); choose one of accuracy, loss, test_accuracy, test_loss")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    assert run.info.status == "FAILED" and client.get_metric_history(run.info.run_id, "loss") == [], "not trained"
    assert tfrexp.run([*TINY, "dataset.validation_fraction=0", "trainer.objective=test_accuracy",
                       f"paths.output_dir={tmp_path}", f"paths.data_dir={data_dir}"]).objective > 0


def test_a_run_that_diverged_fails_again_when_resumed(tmp_path, data_dir, monkeypatch):
    """Resumed from the epoch before its loss exploded, the first batch (the explosion again) was taken as the
    run's start and never checked: the run ended FINISHED with a test loss of 120."""
    overrides = [*TINY, "trainer.epochs=2", f"paths.output_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    check = StopOnDivergence.on_train_batch_end

    def explodes_in_epoch_two(self, batch, logs=None):  # as the loss of a learning rate too high does
        check(self, batch, {**logs, "loss": logs["loss"] * 1000} if self._epoch == 1 else logs)

    monkeypatch.setattr(StopOnDivergence, "on_train_batch_end", explodes_in_epoch_two)
    with pytest.raises(TrainingDiverged, match="at epoch 2, batch 1"):
        tfrexp.run(overrides)
    with pytest.raises(TrainingDiverged, match="at epoch 2, batch 1"):
        tfrexp.run([*overrides, "trainer.resume=true"])
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    assert run.data.tags["resumed"] == "true" and run.info.status == "FAILED"
    assert [point.step for point in client.get_metric_history(run.info.run_id, "loss")] == [1]


def test_an_experiment_deleted_in_the_ui_is_named_with_how_to_restore_it(store):
    settings, experiment_id, client = store
    client.delete_experiment(experiment_id)
    with pytest.raises(tracking_store.TrackingError) as raised:
        tracking_store.connect(settings)
    message = str(raised.value)
    assert "\n" not in message and "tracking.experiment='unit' was deleted" in message
    assert f"mlflow experiments restore --experiment-id {experiment_id}" in message and "tracking.experiment=" in message


def test_a_parent_with_more_children_than_one_search_page_gets_them_all(store):
    """The sweep summary stopped at 1,000 children, MLflow's page size."""
    settings, experiment_id, client = store
    parent = client.create_run(experiment_id).info.run_id
    for _ in range(1001):
        client.create_run(experiment_id, tags={"mlflow.parentRunId": parent})
    assert len(tracking_store.children(settings.uri, experiment_id, parent)) == 1001


def test_a_store_failure_while_ending_a_run_leaves_no_active_run_behind(store, monkeypatch):
    """The next run in the same process (the Python API, a notebook) failed: 'Run ... is already active'."""
    _, experiment_id, client = store

    def store_gone(*args, **kwargs):
        raise MlflowException("the store went away")

    with pytest.raises(RuntimeError):
        with tracking_run.start_run(experiment_id, "first", {}):
            monkeypatch.setattr(mlflow, "set_tag", store_gone)
            raise RuntimeError("training failed")
    monkeypatch.undo()
    assert mlflow.active_run() is None
    with tracking_run.start_run(experiment_id, "next", {}) as run:
        pass
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
