"""Sweeps as MLflow parent/child runs, Optuna search, parallel joblib jobs, and a real MLflow server."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from helpers import free_port, run_tfrexp, start_mlflow_server, stop_mlflow_server

pytestmark = pytest.mark.slow

TINY = ["model=cnn_small", "dataset.max_examples_per_split=300", "trainer.verbose=0", "tracking.log_model=false"]
TESTS_CONF = Path(__file__).resolve().parents[1] / "conf"  # tests/conf: the tests' own config options


def _runs(uri: str, experiment: str = "tfrexp"):
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client, client.search_runs([experiment_id], max_results=100)


def test_a_2x2_sweep_is_one_parent_with_four_children(tmp_path):
    outputs = tmp_path / "outputs"
    result = run_tfrexp("-m", "pipeline.batch_size=64,128", "trainer.learning_rate=1e-3,3e-3", "trainer.epochs=2",
                        *TINY, f"paths.output_dir={outputs}")
    assert result.returncode == 0, result.stderr[-3000:]
    # From the third job on, TensorFlow warned of "tf.function retracing": each job's new model traced once.
    assert "retracing" not in result.stdout + result.stderr
    client, runs = _runs(f"sqlite:///{outputs}/mlflow.db")
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 5 and len(children) == 4

    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("sweep-mnist-cnn_small-")
    assert parent.data.params["sweep.swept_keys"] == "pipeline.batch_size,trainer.learning_rate"
    assert "pipeline.batch_size=64,128" in parent.data.params["sweep.overrides"]
    best = max(children, key=lambda run: run.data.metrics["val_accuracy"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_val_accuracy"] == best.data.metrics["val_accuracy"]

    combos = {(run.data.params["pipeline.batch_size"], run.data.params["trainer.learning_rate"]) for run in children}
    assert combos == {("64", "0.001"), ("64", "0.003"), ("128", "0.001"), ("128", "0.003")}
    names = {run.info.run_name for run in children}
    assert "mnist-cnn_small-batch=64-lr=0.003" in names and len(names) == 4
    assert sorted(run.data.tags["sweep.job"] for run in children) == ["0", "1", "2", "3"]
    fingerprints = {run.data.tags["records.fingerprint"] for run in children}
    assert len(fingerprints) == 1
    for run in children:
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert tags["sweep.id"] == parent.data.tags["sweep.id"]
        assert len(tags["git.commit"]) == 40 and tags["git.dirty"] in {"true", "false"}
        assert "pipeline.batch_size=" in tags["hydra.overrides"]
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2]
        assert "test_accuracy" in run.data.metrics
        if tags["sweep.job"] != "0":
            # A later job in the same process counts its start-up from its own start, not the process's: it
            # was the process's, so the whole of the jobs before it (and TensorFlow's import) counted as its own.
            assert run.data.metrics["startup_seconds"] < (run.info.end_time - run.info.start_time) / 1000
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"learning_curves.png", "confusion_matrix.png", "per_class_accuracy.json",
                "model_summary.txt", "config.yaml", "manifest.json"} <= artifacts
        with open(client.download_artifacts(run.info.run_id, "confusion_matrix.png", str(tmp_path)), "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"
        [training_input] = [i for i in run.inputs.dataset_inputs if i.tags[0].value == "training"]
        assert training_input.dataset.name == "mnist-train"
        assert training_input.dataset.digest == tags["records.fingerprint"]


def test_four_parallel_jobs_write_the_records_once(tmp_path):
    outputs = tmp_path / "outputs"
    result = run_tfrexp("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "trainer.seed=1,2,3,4",
                        "trainer.epochs=1", *TINY, f"paths.output_dir={outputs}")
    assert result.returncode == 0, result.stderr[-3000:]
    # Each worker composes its job's config again, where the driver's warning filter did not reach: Hydra's
    # "provider=hydra.searchpath in main, path=conf is not available" came once a job (no conf/ here).
    assert "provider=hydra.searchpath in main, path=conf is not available" not in result.stderr, result.stderr[-3000:]
    versions = [path for path in (outputs / "records" / "mnist").iterdir() if not path.name.endswith(".lock")]
    finished = [path for path in versions if (path / "manifest.json").is_file()]
    leftovers = [path.name for path in versions if path.name.startswith((".tmp-", ".old-"))]
    assert len(finished) == 1 and leftovers == [] and len(versions) == 1
    _, runs = _runs(f"sqlite:///{outputs}/mlflow.db")
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert sorted(run.info.status for run in children) == ["FINISHED"] * 4
    assert sorted(run.data.tags["records.reused"] for run in children) == ["false", "true", "true", "true"]
    assert {run.data.tags["records.fingerprint"] for run in children} == {finished[0].name}


def test_optuna_search_goes_on_past_failed_trials(tmp_path):
    outputs = tmp_path / "outputs"
    result = run_tfrexp("-m", f"hydra.searchpath=[file://{TESTS_CONF}]", "hparams_search=optuna_with_failures",
                        "trainer.epochs=1", *TINY, f"paths.output_dir={outputs}")
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = _runs(f"sqlite:///{outputs}/mlflow.db")
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    statuses = {run.data.params["model.dropout"]: run.info.status for run in children}
    assert len(children) == 4 and statuses == {"0.1": "FINISHED", "1.5": "FAILED"}
    assert parent.data.params["sweep.swept_keys"] == "model.dropout,pipeline.batch_size,trainer.learning_rate"
    finished = [run for run in children if run.info.status == "FINISHED"]
    best = max(finished, key=lambda run: run.data.metrics["val_accuracy"])
    assert parent.data.tags["best_run_id"] == best.info.run_id and parent.data.metrics["sweep.finished"] == len(finished)
    assert "model.dropout=1.5: must be in [0, 0.5)" in next(
        run for run in children if run.info.status == "FAILED").data.tags["error"]
    # The search sums itself up like a grid sweep: one row per trial, the failed ones included.
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    summary = client.download_artifacts(parent.info.run_id, "sweep_summary.csv", str(tmp_path))
    with open(summary, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["status"] for row in rows) == sorted(run.info.status for run in children)
    assert {row["model.dropout"] for row in rows} == {"0.1", "1.5"} and "trainer.learning_rate" in rows[0]
    assert "sweep_objective.png" in {item.path for item in client.list_artifacts(parent.info.run_id)}


@pytest.fixture
def mlflow_server(tmp_path):
    server, uri = start_mlflow_server(tmp_path / "server.db", tmp_path / "art")
    yield uri
    stop_mlflow_server(server)


def test_a_run_against_a_real_mlflow_server(tmp_path, mlflow_server):
    outputs = tmp_path / "outputs"
    result = run_tfrexp("trainer.epochs=1", *TINY, "tracking.log_model=true", f"tracking.uri={mlflow_server}",
                        f"paths.output_dir={outputs}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{mlflow_server}/#/experiments/" in result.stdout
    client, [run] = _runs(mlflow_server)
    assert run.info.status == "FINISHED" and run.data.params["tracking.uri"] == mlflow_server
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"learning_curves.png", "confusion_matrix.png", "manifest.json"} <= artifacts
    assert not (outputs / "mlflow.db").exists() and not (outputs / "mlartifacts").exists()
    stored = {path.name for path in (tmp_path / "art").rglob("*.png")}
    assert stored == {"learning_curves.png", "confusion_matrix.png"}, "artifacts belong in the server's store"


def test_an_unreachable_server_stops_the_run_before_any_work(tmp_path):
    outputs = tmp_path / "outputs"
    result = run_tfrexp(*TINY, f"tracking.uri=http://127.0.0.1:{free_port()}", f"paths.output_dir={outputs}")
    assert result.returncode != 0
    assert "the MLflow server does not answer" in result.stderr and "Traceback" not in result.stderr
    assert not (outputs / "records").exists()


def test_a_sweep_whose_every_job_is_refused_fails_and_says_why(tmp_path):
    result = run_tfrexp("-m", "pipeline.batch_size=0,-1", cwd=tmp_path)  # the default, relative outputs/
    assert result.returncode != 0
    [last_line] = result.stderr.strip().splitlines()[-1:]
    assert last_line.startswith("tfrexp: error: sweep ") and "none of its 2 jobs finished" in last_line
    assert "(the first: pipeline.batch_size=0: must be > 0)" in last_line
    client, runs = _runs(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FAILED" and parent.data.tags["error"] == "none of the 2 jobs finished"
    assert sorted(run.info.status for run in children) == ["FAILED", "FAILED"]
    with open(client.download_artifacts(parent.info.run_id, "sweep_summary.csv", str(tmp_path))) as handle:
        reasons = sorted(row["error"] for row in csv.DictReader(handle))
    assert reasons == ["pipeline.batch_size=-1: must be > 0", "pipeline.batch_size=0: must be > 0"]
    assert not list((tmp_path / "outputs" / "multiruns").glob("*/mlflow_sweep.json")), "the sweep folder is freed"


def test_a_job_refused_as_its_backend_loads_is_a_failed_child(tmp_path):
    """A refusal after the config check, as TensorFlow and Keras load (here: a second Keras backend in a serial
    sweep's one process; on a GPU machine, no free GPU), is a FAILED child with the reason (there was none)."""
    result = run_tfrexp("-m", "trainer.backend=tensorflow,jax", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = _runs(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = {run.data.params.get("trainer.backend", "refused"): run for run in runs
                if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == ["refused", "tensorflow"] and children["tensorflow"].info.status == "FINISHED"
    assert children["refused"].info.status == "FAILED"
    assert "Keras is already loaded with the tensorflow backend" in children["refused"].data.tags["error"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep.children"] == 2


def test_a_search_whose_every_trial_fails_ends_its_parent_in_one_line(tmp_path):
    result = run_tfrexp("-m", f"hydra.searchpath=[file://{TESTS_CONF}]", "hparams_search=optuna_all_refused",
                        cwd=tmp_path)
    assert result.returncode == 2
    [last_line] = result.stderr.strip().splitlines()[-1:]
    assert last_line.startswith("tfrexp: error: sweep ") and "none of its 2 jobs finished" in last_line
    assert "Traceback" not in result.stderr
    _, runs = _runs(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    assert parent.info.status == "FAILED" and parent.data.tags["error"] == "none of the 2 jobs finished"
    assert not list((tmp_path / "outputs" / "multiruns").glob("*/mlflow_sweep.json")), "the sweep folder is freed"


def test_a_sweep_whose_launcher_cannot_start_ends_its_parent_in_one_line(tmp_path):
    """A Ray head address where nothing listens: refused at once (Ray's own client waited over 15 minutes), and
    hermetic, where the default `auto` would find any Ray cluster running on the machine and start on it."""
    from helpers import user_environment

    dead = f"127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "tfrexp", "-m", "hydra/launcher=ray_cluster",
                             f"hydra.launcher.ray.init.address={dead}", "trainer.seed=1,2"],
                            cwd=tmp_path, env=user_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    [last_line] = result.stderr.strip().splitlines()[-1:]
    assert last_line.startswith("tfrexp: error: sweep ") and last_line.endswith(
        f"the sweep stopped: ConnectionError: no Ray cluster at '{dead}' (hydra.launcher.ray.init.address, "
        f"RAY_ADDRESS): nothing answers at {dead} (Connection refused)")
    assert "Traceback" not in result.stderr
    _, runs = _runs(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    [parent] = runs
    assert parent.info.status == "FAILED" and "ConnectionError" in parent.data.tags["error"]
    assert not list((tmp_path / "outputs" / "multiruns").glob("*/mlflow_sweep.json")), "the sweep folder is freed"


@pytest.mark.parametrize("signum, launcher", [(signal.SIGINT, []), (signal.SIGTERM, []),
                                              (signal.SIGTERM, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])])
def test_an_interrupted_sweep_ends_its_parent_killed(tmp_path, signum, launcher):
    from helpers import user_environment, wait_for

    # 1,000 epochs: the signal comes while a job trains, whatever the machine's speed. In 2 joblib workers, two jobs
    # train in other processes, whose runs the driver ends (the signal reaches the driver only).
    sweep = subprocess.Popen([sys.executable, "-m", "tfrexp", "-m", "trainer.seed=1,2", "trainer.epochs=1000", *TINY,
                              *launcher],
                             cwd=tmp_path, env=user_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    store = f"sqlite:///{tmp_path}/outputs/mlflow.db"
    try:
        # The first job's folder first: the store is made by then (the driver makes it before any job).
        wait_for(lambda: list((tmp_path / "outputs" / "multiruns").glob("*/0")), 120, "the first job's folder")
        wait_for(lambda: _running_jobs(store) == (2 if launcher else 1), 120, "the jobs' runs")
        sweep.send_signal(signum)
        _, stderr = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 130, stderr[-3000:]
    # Our line last; with joblib, Python's resource tracker may then warn of a semaphore that a worker, killed by
    # joblib on the interruption, held ("1 leaked semaphore objects to clean up at shutdown": it cleans it up).
    assert any(line.startswith("tfrexp: the sweep was interrupted") for line in stderr.strip().splitlines()[-3:])
    _, runs = _runs(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    assert (parent.info.status, parent.data.tags.get("error")) == ("KILLED", "interrupted"), stderr[-3000:]
    assert all(run.info.status != "RUNNING" for run in runs), stderr[-3000:]
    assert not list((tmp_path / "outputs" / "multiruns").glob("*/mlflow_sweep.json")), "the sweep folder is freed"


def _running_jobs(store: str) -> int:
    client = MlflowClient(store)
    try:  # read while the jobs write: SQLite may say it is locked, then the next poll asks again
        experiment = client.get_experiment_by_name("tfrexp")
        runs = [] if experiment is None else client.search_runs([experiment.experiment_id],
                                                                "attributes.status = 'RUNNING'")
    except MlflowException:
        return 0
    return sum(1 for run in runs if run.data.tags.get("mlflow.parentRunId"))
