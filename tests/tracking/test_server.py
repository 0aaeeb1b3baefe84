"""The shared tracking server of `make server` (tfrexp/tracking/server.py): a real PostgreSQL and a real `mlflow server` on
loopback, with eight jobs at once logging into it (a joblib sweep and a Ray sweep side by side), and a refused
start that leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from unittest.mock import patch

import mlflow
import optuna
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from helpers import REPO, free_port, ray_head, user_environment
from tfrexp.config.schema import TrackingConfig
from tfrexp.tracking import postgres, server, store

TINY = ["model=cnn_small", "dataset.max_examples_per_split=300", "trainer.verbose=0", "tracking.log_model=false"]


@pytest.fixture
def server_root():
    """A root folder PostgreSQL can reach: under root it runs as `postgres`, which cannot pass pytest's tmp_path
    (it sits under a 0700 folder). Whatever the test leaves running is stopped, even when it fails."""
    root = Path(tempfile.mkdtemp(prefix="tfrexp-server-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        try:
            server.stop(root)
        finally:
            shutil.rmtree(root)


def _start_tfrexp(log: Path, env: dict, *arguments: str) -> subprocess.Popen:
    """`tfrexp` in a child process, its output into a file (two at once would fill unread pipes)."""
    with open(log, "w") as output:
        return subprocess.Popen([sys.executable, "-m", "tfrexp", *arguments], cwd=REPO, stdout=output,
                                stderr=subprocess.STDOUT, env={**user_environment(), **env})


def _race_on_creating_the_experiment(uri: str, name: str) -> tuple[list[str], list[str]]:
    """Two `connect`s in threads, each made to find no experiment and then wait for the other before creating
    it: what each create did (created, or MLflow's error code), and the experiment id each connect returned."""
    real_look, real_create = mlflow.get_experiment_by_name, mlflow.create_experiment
    both_looked, created, ids = threading.Barrier(2, timeout=60), [], []

    def look(experiment_name):
        if threading.current_thread().name.startswith("race"):
            threading.current_thread().name = "looked"  # only the first look is made to miss
            both_looked.wait()
            return None
        return real_look(experiment_name)

    def create(*args, **kwargs):
        try:
            experiment_id = real_create(*args, **kwargs)
        except MlflowException as error:
            created.append(error.error_code)
            raise
        created.append("created")
        return experiment_id

    def connect():
        ids.append(store.connect(TrackingConfig(uri=uri, experiment=name)))

    threads = [threading.Thread(target=connect, name=f"race-{number}") for number in range(2)]
    with patch.object(mlflow, "get_experiment_by_name", look), patch.object(mlflow, "create_experiment", create):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    return created, ids


def _listening(port: int) -> list[str]:
    """`ss -ltnp` lines of the sockets that listen on this port, any address."""
    lines = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in lines if line.split()[3].rsplit(":", 1)[1] == str(port)]


@pytest.mark.slow
def test_eight_parallel_jobs_log_every_epoch_into_the_postgres_backed_server(server_root, tmp_path):
    port, pg_port = free_port(), free_port()
    uri = server.start(server_root, port, pg_port, workers=2, durable=False)
    assert uri == f"http://127.0.0.1:{port}"
    assert server.start(server_root, port, pg_port) == uri, "a second start finds the running server"

    # Loopback only: nothing of either server listens on another address (0.0.0.0, [::]).
    for number, program in ((pg_port, "postgres"), (port, "python")):
        lines = _listening(number)
        assert lines and all(line.split()[3] == f"127.0.0.1:{number}" for line in lines), lines
        assert all(f'(("{program}"' in line for line in lines), lines

    # Eight jobs at once: a sweep of 4 in joblib workers and a sweep of 4 as tasks of a Ray cluster, side by
    # side, so the two sweeps also race on creating the experiment and on writing the same records.
    outputs = tmp_path / "outputs"
    common = ["trainer.learning_rate=0.001,0.002", "pipeline.batch_size=64,128", "trainer.epochs=2", *TINY,
              f"tracking.uri={uri}", f"paths.output_dir={outputs}"]
    with ray_head(tmp_path, num_cpus=4) as (address, ray_env, _):
        sweeps = {
            "joblib": _start_tfrexp(tmp_path / "joblib.log", {}, "-m", "hydra/launcher=joblib",
                                    "hydra.launcher.n_jobs=4", *common),
            "ray": _start_tfrexp(tmp_path / "ray.log", ray_env, "-m", "hydra/launcher=ray_cluster",
                                 f"hydra.launcher.ray.init.address={address}", *common),
        }
        for name, sweep in sweeps.items():
            assert sweep.wait(timeout=900) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id], max_results=100)
    parents = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    assert len(runs) == 10 and len(parents) == 2 and {run.info.status for run in parents} == {"FINISHED"}
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId")]
    failed = {run.info.run_name: run.data.tags.get("error") for run in children if run.info.status != "FINISHED"}
    assert len(children) == 8 and failed == {}
    for parent in parents:
        mine = [run for run in children if run.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        combos = {(run.data.params["trainer.learning_rate"], run.data.params["pipeline.batch_size"]) for run in mine}
        assert len(combos) == 4
    assert len({run.data.tags["records.fingerprint"] for run in children}) == 1
    assert sorted(run.data.tags["records.reused"] for run in children).count("false") == 1, "written once"
    for run in children:
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2], (run, metric)
    # Artifacts go through the server's proxy into the root folder.
    assert {item.path for item in client.list_artifacts(children[0].info.run_id)} >= {"config.yaml"}
    assert any((server_root / "artifacts").rglob("config.yaml"))


    pid = json.loads((server_root / "server.json").read_text())["pid"]
    assert server.stop(server_root) == [f"mlflow server (pid {pid})", f"PostgreSQL ({server_root / 'pgdata'})"]
    assert _listening(port) == [] and _listening(pg_port) == []
    assert server.stop(server_root) == [], "a second stop finds nothing to stop"


@pytest.mark.slow
def test_two_jobs_creating_the_experiment_at_once_both_use_it(server_root):
    """mlflow issue 4123, made to happen: both jobs look, find no experiment, and only then create it; the one
    whose create the server refuses uses the other's experiment instead of failing."""
    uri = server.start(server_root, free_port(), free_port(), workers=2, durable=False)
    created, ids = _race_on_creating_the_experiment(uri, "raced")
    assert sorted(created) == ["RESOURCE_ALREADY_EXISTS", "created"], created
    assert len(ids) == 2 and len(set(ids)) == 1, ids


@pytest.mark.slow
def test_the_store_lets_in_only_the_holder_of_its_password_file_and_mlflow_is_no_superuser(server_root, tmp_path):
    port, pg_port = free_port(), free_port()
    server.start(server_root, port, pg_port, workers=1, durable=False)
    passwords = server_root / "pgpass"
    assert (passwords.stat().st_mode & 0o777, passwords.stat().st_uid) == (0o600, os.geteuid()), "the owner's alone"
    psql = [str(postgres.bindir() / "psql"), "-X", "-w", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "mlflow",
            "-d", "mlflow", "-tAc", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    without = subprocess.run(psql, env={**environment, "PGPASSFILE": str(tmp_path / "none")}, capture_output=True,
                             text=True, cwd="/")
    assert without.returncode != 0 and "password" in without.stderr, "no password, no entry"
    if os.geteuid() == 0:  # another local account (it cannot read the file)
        other = subprocess.run(["runuser", "-u", "nobody", "--", *psql], env=environment, capture_output=True,
                               text=True, cwd="/")
        assert other.returncode != 0 and "password" in other.stderr, other.stderr
    holder = subprocess.run(psql, env={**environment, "PGPASSFILE": str(passwords)}, capture_output=True, text=True,
                            cwd="/")
    assert (holder.returncode, holder.stdout.strip()) == (0, "f"), holder.stderr
    # The searches' database beside MLflow's: a study every job of a sweep can reach, through the same file.
    with patch.dict(os.environ, {"PGPASSFILE": str(passwords)}):
        study = optuna.create_study(study_name="s", storage=postgres.study_storage_uri(pg_port))
        trial = study.ask()
        trial.report(0.5, step=1)
        assert optuna.load_study(study_name="s", storage=postgres.study_storage_uri(pg_port)).trials[0] \
            .intermediate_values == {1: 0.5}
    server.stop(server_root)
    assert server.start(server_root, port, pg_port, workers=1, durable=False) == f"http://127.0.0.1:{port}", \
        "a restart finds its password"


@pytest.mark.parametrize("option", ["--port", "--pg-port"])
def test_a_port_in_use_is_refused_in_one_line_and_nothing_is_started(server_root, option):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy, other = taken.getsockname()[1], free_port()
        ports = {"--port": busy, "--pg-port": other} if option == "--port" else {"--port": other, "--pg-port": busy}
        result = subprocess.run(
            [sys.executable, "-m", "tfrexp.tracking.server", "start", "--root", str(server_root),
             *(str(part) for pair in ports.items() for part in pair)],
            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    expected = f"tfrexp: error: {option} {busy}: 127.0.0.1:{busy} is already in use (Address already in use); "
    assert result.stderr.strip().splitlines() == [expected + "choose another port"]
    assert list(server_root.iterdir()) == [], "refused before anything was created"
    assert _listening(other) == []


def test_a_root_that_is_a_file_is_refused_in_one_line(tmp_path):
    """It was a NotADirectoryError traceback from the clean-up of a previous start."""
    taken = tmp_path / "afile"
    taken.write_text("")
    with pytest.raises(server.ServerError, match="afile: not a folder"):
        server.start(taken, free_port(), free_port())
