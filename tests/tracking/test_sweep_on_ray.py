"""A sweep on a real Ray cluster, reached by address: a Ray head on 127.0.0.1 started in a folder of its own,
four jobs as Ray tasks of a sweep started with the default, relative paths in the user's project folder, one
MLflow parent run with a child per job in that project's store, records written once and reused by the other
jobs; and an Optuna search whose trials, run as Ray tasks, report to the project's study."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow.tracking import MlflowClient

from helpers import is_loopback, listening_addresses, ray_head, run_tfrexp, user_environment, wait_for
from tfrexp.bench.local_ray import RAY_ON_LOOPBACK

pytestmark = pytest.mark.slow

TINY = ["model=cnn_small", "dataset.max_examples_per_split=300", "trainer.epochs=2", "trainer.verbose=0",
        "tracking.log_model=false"]


def test_a_sweep_through_a_ray_cluster_by_address(tmp_path):
    head, project = tmp_path / "head", tmp_path / "project"
    head.mkdir()
    project.mkdir()
    outputs = project / "outputs"  # the default paths.output_dir, relative to where the user starts tfrexp
    # The head was started in a shell without the user's TFREXP_DATA_DIR (an absolute path here): the jobs'
    # data folder is the one the user's command resolved, not the head's (they found no data before).
    with ray_head(head, without=("TFREXP_DATA_DIR",)) as (address, head_env, session):
        env = {**head_env, "TFREXP_DATA_DIR": os.environ["TFREXP_DATA_DIR"]}
        result = run_tfrexp("-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}",
                            "trainer.learning_rate=0.001,0.003", "pipeline.batch_size=64,128", *TINY, env=env,
                            cwd=project)
        listening = listening_addresses(session)  # the cluster's processes, its workers included
        # A search too: two trials at once as Ray tasks, each reporting every epoch to the study in the project.
        search = run_tfrexp("-m", "hparams_search=mnist_optuna", "hydra/launcher=ray_cluster",
                            f"hydra.launcher.ray.init.address={address}", "hydra.sweeper.n_trials=2",
                            "hydra.sweeper.n_jobs=2", "hydra/sweeper/pruner=none", *TINY, env=env, cwd=project)
    assert search.returncode == 0, search.stderr[-3000:]
    trials = optuna.load_study(study_name="mnist_optuna", storage=f"sqlite:///{outputs}/optuna.db").trials
    assert [(trial.state.name, sorted(trial.intermediate_values)) for trial in trials] == [("COMPLETE", [1, 2])] * 2
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (head / "outputs").exists(), "the jobs ran in the head's folder but wrote to the user's"
    # Its address, which `ray start` notes for address="auto", goes with it: a later `auto` must not wait on it.
    noted = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    assert not noted.is_file() or noted.read_text().strip() != address
    assert listening and all(is_loopback(address) for address in listening), listening

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent" and "mnist_optuna" not in
                run.data.tags["hydra.overrides"]]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 5 + 3 and {run.info.status for run in runs} == {"FINISHED"}  # and the search's 1 + 2
    assert sorted(run.info.run_name for run in children) == [
        "mnist-cnn_small-lr=0.001-batch=128", "mnist-cnn_small-lr=0.001-batch=64",
        "mnist-cnn_small-lr=0.003-batch=128", "mnist-cnn_small-lr=0.003-batch=64"]
    for run in children:
        assert [point.step for point in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    # The first job wrote the records under the fingerprint lock; the others, waiting on it, reused them.
    assert sorted(run.data.tags["records.reused"] for run in children) == ["false", "true", "true", "true"]
    assert len({run.data.tags["records.fingerprint"] for run in children}) == 1
    assert parent.data.tags["best_run_id"] in {run.info.run_id for run in children}


def _running_children(store: str) -> list:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("tfrexp")
    if experiment is None:
        return []
    return [run for run in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
            if run.data.tags.get("mlflow.parentRunId")]


def test_a_ray_sweep_stopped_by_sigterm_ends_the_job_it_was_running_killed(tmp_path):
    """The job runs on a Ray worker, which the driver's SIGTERM does not reach: its run was left RUNNING while
    the sweep said it ended KILLED. The driver ends it."""
    head, project = tmp_path / "head", tmp_path / "project"
    head.mkdir()
    project.mkdir()
    store = f"sqlite:///{project}/outputs/mlflow.db"
    with ray_head(head, num_cpus=1) as (address, env, _):
        # 1,000 epochs: the job is still training when the signal comes, whatever the machine's speed.
        sweep = subprocess.Popen([sys.executable, "-m", "tfrexp", "-m", "hydra/launcher=ray_cluster",
                                  f"hydra.launcher.ray.init.address={address}", "trainer.seed=1,2",
                                  "model=cnn_small", "dataset.max_examples_per_split=300", "trainer.epochs=1000",
                                  "trainer.verbose=0", "tracking.log_model=false"],
                                 cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: _running_children(store), 240, "a job's run")
            sweep.send_signal(signal.SIGTERM)
            _, stderr = sweep.communicate(timeout=120)
        finally:
            sweep.kill()
    assert sweep.returncode == 130, stderr[-3000:]
    # Our line near the end: Ray forwards what the still-running job prints to the driver in a thread of its own,
    # which may come after it.
    assert any(line.startswith("tfrexp: the sweep was interrupted") for line in stderr.strip().splitlines()[-3:])
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    [child] = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert (parent.info.status, parent.data.tags["error"]) == ("KILLED", "interrupted")
    assert (child.info.status, child.data.tags["error"]) == ("KILLED", "the sweep ended before this job: interrupted")


def test_a_sweep_on_the_plugins_own_ray_stopped_by_sigterm_ends_its_runs_killed(tmp_path):
    """`hydra/launcher=ray` starts a throwaway Ray from the driver, and Ray's init put in its own SIGTERM handler
    over the sweep's: the driver aborted (exit 134), leaving the parent and the job RUNNING."""
    store = f"sqlite:///{tmp_path}/outputs/mlflow.db"
    sweep = subprocess.Popen([sys.executable, "-m", "tfrexp", "-m", "hydra/launcher=ray",
                              "+hydra.launcher.ray.init.num_cpus=1", "trainer.seed=1,2", "model=cnn_small",
                              "dataset.max_examples_per_split=300", "trainer.epochs=1000", "trainer.verbose=0",
                              "tracking.log_model=false"],
                             cwd=tmp_path, env={**user_environment(), **RAY_ON_LOOPBACK}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: _running_children(store), 240, "a job's run")
        listening = listening_addresses(sweep.pid)  # the throwaway cluster's processes, in the driver's session
        sweep.send_signal(signal.SIGTERM)
        _, stderr = sweep.communicate(timeout=120)
        wait_for(lambda: not _session_processes(sweep.pid), 60, "the throwaway Ray to stop with its driver")
    finally:
        sweep.kill()
        for process in _session_processes(sweep.pid):
            process.kill()
    assert listening and all(is_loopback(address) for address in listening), listening
    assert sweep.returncode == 130, stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    [parent] = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    [child] = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert (parent.info.status, parent.data.tags["error"]) == ("KILLED", "interrupted")
    assert child.info.status == "KILLED"


def _session_processes(session: int) -> list:
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found
