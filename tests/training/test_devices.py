"""One GPU per job (tfrexp/training/devices.py): a sweep's joblib workers each lease GPUs of their own before
TensorFlow loads and keep them for life; Ray tasks get theirs from Ray; a single run sees every GPU. No GPU
here: the ids are only handed out and logged (TensorFlow then finds no such GPU and trains on the CPU)."""

from __future__ import annotations

import multiprocessing
import os
from types import SimpleNamespace

import pytest
from hydra.types import RunMode

# Nothing that loads TensorFlow or MLflow at module level (helpers does): the spawned workers import this module.
from tfrexp.config.schema import TrainerConfig
from tfrexp.errors import ConfigError, TfrexpError
from tfrexp.training import devices

TINY = ["model=cnn_small", "dataset.max_examples_per_split=300", "trainer.epochs=1", "trainer.verbose=0",
        "tracking.log_model=false", "tracking.system_metrics=false"]


def _hydra(mode: RunMode, sweep_dir) -> SimpleNamespace:
    """What choose_job_gpus reads of a job's HydraConfig."""
    return SimpleNamespace(mode=mode, sweep=SimpleNamespace(dir=str(sweep_dir)))


def _worker_job(sweep_dir: str, gpus: list[str] | None, per_job: int, wait_s: float, results, release) -> None:
    """Two jobs in one worker process of a sweep, as a joblib (loky) worker runs them; then it waits to leave."""
    devices.LEASE_WAIT_S = wait_s
    trainer = TrainerConfig(sweep_gpus=gpus, gpus_per_job=per_job)
    try:
        for _ in range(2):  # the second job of the worker keeps the first one's GPU
            devices.choose_job_gpus(trainer, _hydra(RunMode.MULTIRUN, sweep_dir))
            results.put((os.getpid(), devices.visible_devices()))
    except TfrexpError as error:
        results.put((os.getpid(), f"refused: {error}"))
    release.wait(600)  # set by the fixture at the latest; a worker leaving sooner would free its GPU early


@pytest.fixture
def workers(tmp_path):
    """start(gpus, per_job=1, wait_s=...) -> a spawned worker process (multiprocessing, like loky's: it has a
    parent process); every worker is released and joined at the end."""
    context = multiprocessing.get_context("spawn")
    results, started = context.Queue(), []

    def start(gpus, per_job=1, wait_s=0.5):
        release = context.Event()
        process = context.Process(target=_worker_job, args=(str(tmp_path / "sweep"), gpus, per_job, wait_s,
                                                             results, release))
        process.start()
        started.append((process, release))
        return process, release

    def answers(count):
        return [results.get(timeout=60) for _ in range(count)]

    yield start, answers
    for process, release in started:
        release.set()
        process.join(30)


def test_workers_of_a_sweep_each_hold_their_own_gpu_until_they_exit(workers):
    start, answers = workers
    first, release_first = start(["0", "1"])
    second, _ = start(["0", "1"])
    held = answers(4)
    by_worker = {pid: {seen for p, seen in held if p == pid} for pid in (first.pid, second.pid)}
    assert sorted(by_worker.values(), key=sorted) == [{"0"}, {"1"}], held  # one each, the same for both jobs

    third, _ = start(["0", "1"])  # a third worker beside them: none is free
    [(pid, refused)] = answers(1)
    assert pid == third.pid and refused.startswith("refused: no free GPU for this job") and "n_jobs" in refused

    release_first.set()  # the first worker leaves: the kernel frees its lease
    first.join(30)
    fourth, _ = start(["0", "1"], wait_s=30)
    assert answers(2) == [(fourth.pid, gpu) for gpu in by_worker[first.pid]] * 2


def test_a_worker_takes_as_many_gpus_as_a_job_asks_or_shares_them_all(workers):
    start, answers = workers
    start(["0", "1", "2", "3"], per_job=2)
    start(["0", "1", "2", "3"], per_job=2)
    taken = sorted({seen for _, seen in answers(4)})
    assert len(taken) == 2 and sorted(",".join(taken).split(",")) == ["0", "1", "2", "3"], taken
    start(["0", "1", "2", "3"], per_job=0)  # asked to share: every GPU of the sweep, no lease
    assert {seen for _, seen in answers(2)} == {"0,1,2,3"}


def test_a_single_run_and_jobs_in_the_sweeps_own_process_see_every_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    trainer = TrainerConfig(sweep_gpus=["0", "1"])
    devices.choose_job_gpus(trainer, _hydra(RunMode.RUN, tmp_path))
    devices.choose_job_gpus(trainer, _hydra(RunMode.MULTIRUN, tmp_path))  # basic launcher, joblib n_jobs=1
    devices.choose_job_gpus(trainer, None)  # the Python API
    assert devices.visible_devices() == "all" and list(tmp_path.iterdir()) == []


def test_visible_devices_and_the_gpus_a_sweep_was_given(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert devices.sweep_gpus() == ["2", "5"] and devices.visible_devices() == "2, 5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.sweep_gpus() == [] and devices.visible_devices() == "none"


def test_ray_tasks_ask_for_gpus_only_from_a_cluster_that_has_them():
    # Not connected to a cluster (and on one without GPUs, tested for real by test_sweep_on_ray.py): 0, so no
    # task waits for ever on a GPU that is not there.
    assert devices.ray_gpus_if_any(1) == 0


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.gpus_per_job=-1"], "trainer.gpus_per_job=-1: must be >= 0"),
    (["trainer.sweep_gpus=[0,0]"], "trainer.sweep_gpus=['0', '0']: must be distinct GPU ids"),
    (["trainer.sweep_gpus=[0,1]", "trainer.gpus_per_job=3"], "trainer.gpus_per_job=3: more than the 2 GPUs"),
])
def test_bad_gpu_settings_are_refused_naming_the_key(make_settings, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_settings(*overrides)


def _children(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    return [run for run in runs if "mlflow.parentRunId" in run.data.tags]


def _assert_side_by_side_jobs_never_share(children) -> None:
    """Jobs whose runs overlapped in time ran in different workers at once: they must hold different GPUs."""
    pairs = [(a, b) for i, a in enumerate(children) for b in children[i + 1:]
             if a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time]
    assert pairs, "no two jobs ran side by side: the test proves nothing"
    for a, b in pairs:
        assert a.data.params["runtime.visible_devices"] != b.data.params["runtime.visible_devices"], (a, b)


@pytest.mark.slow
def test_a_joblib_sweep_gives_each_worker_its_own_gpu(tmp_path):
    from helpers import run_tfrexp

    outputs = tmp_path / "outputs"
    result = run_tfrexp("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.sweep_gpus=[0,1]",
                        "trainer.seed=1,2,3,4", *TINY, f"paths.output_dir={outputs}")
    assert result.returncode == 0, result.stderr[-3000:]
    children = _children(f"sqlite:///{outputs}/mlflow.db")
    assert len(children) == 4 and {run.info.status for run in children} == {"FINISHED"}
    # Each job logs the one GPU its worker was given; both workers got one.
    assert {run.data.params["runtime.visible_devices"] for run in children} == {"0", "1"}
    assert {run.data.params["runtime.device"] for run in children} == {"CPU"}  # no such GPU here
    _assert_side_by_side_jobs_never_share(children)


@pytest.mark.slow
def test_ray_gives_each_task_of_a_sweep_its_own_gpu(tmp_path):
    from helpers import is_loopback, listening_addresses, ray_head, run_tfrexp

    head, project = tmp_path / "head", tmp_path / "project"
    head.mkdir()
    project.mkdir()
    # The head declares 2 GPUs this machine lacks: Ray hands them to tasks all the same. hydra/launcher=ray_cluster
    # asks for one per task because the cluster has GPUs; nothing tells the jobs which.
    with ray_head(head, num_cpus=2, num_gpus=2) as (address, env, session):
        result = run_tfrexp("-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}",
                            "trainer.seed=1,2,3,4", *TINY, env=env, cwd=project)
        listening = listening_addresses(session)
    assert result.returncode == 0, result.stderr[-3000:]
    assert listening and all(is_loopback(address) for address in listening), listening
    children = _children(f"sqlite:///{project}/outputs/mlflow.db")
    assert len(children) == 4 and {run.info.status for run in children} == {"FINISHED"}
    assert {run.data.params["runtime.visible_devices"] for run in children} <= {"0", "1"}
    _assert_side_by_side_jobs_never_share(children)
