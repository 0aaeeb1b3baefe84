"""The same 8-job sweep one job after another, in 2 joblib workers, and as tasks of a local Ray cluster (a
head on 127.0.0.1 with 2 CPUs, started before the clock runs, as a cluster already runs in real use).

Wall time is the whole `tfrexp -m` command; fit time is what each child run logged (`fit_seconds`). The
per-job overhead is the worker time a job spends on anything but fitting (start-up, records check, MLflow,
evaluation, the launcher itself), two ways:
- over the whole command, (wall x workers - total fit) / jobs: the one-time start-up (the driver's imports and
  the sweep's parent run; each worker's TensorFlow import) is spread over the 8 jobs;
- a further job's: the same sweep of 2 jobs is run too, just before or just after the 8, and the difference
  is divided by the 6 jobs more, ((wall_8 - wall_2) x workers - (fit_8 - fit_2)) / 6, which leaves the
  one-time start-up out (it has a case of its own: `startup`).
The two sweeps take turns over up to 3 rounds (`--rounds`; with one pair, joblib's figure read 2.0 s and 1.3 s
in two runs minutes apart); each figure is the median of the rounds' figures, the spread in brackets.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import time

from tfrexp.bench.measure import Bench, Row
from tfrexp.records.writer import ensure_records
from tfrexp.tracking.store import latest_sweep_children

JOBS = 8
FEW_JOBS = 2  # the sweep whose wall time is taken off the 8 jobs' to leave the one-time start-up out
WORKERS = 2
MAX_ROUNDS = 3  # each round is two whole sweeps: about 40 s here
SETTINGS = ["model=cnn_small", "dataset.max_examples_per_split=2000", "trainer.epochs=1", "trainer.verbose=0",
            "tracking.log_model=false", "tracking.system_metrics=false"]


def bench_sweeps(bench: Bench) -> list[Row]:
    settings, source = bench.settings(*SETTINGS)
    ensure_records(source, settings.writer, settings.paths.records_dir)  # every mode reuses them
    serial = _sweep(bench, "serial", 1, [])
    rows = [serial, _sweep(bench, "joblib", WORKERS, ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={WORKERS}"],
                           baseline=serial.ours)]
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        return [*rows, Row(f"sweep of {JOBS} jobs: Ray", "s", float("nan"), note="pip install 'tfrexp[ray]'")]
    from tfrexp.bench.local_ray import ray_head

    started = time.perf_counter()
    with ray_head(bench.work_dir, num_cpus=WORKERS) as (address, env, _):
        head_seconds = time.perf_counter() - started
        launcher = ["hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}"]
        ray = _sweep(bench, "Ray", WORKERS, launcher, env=env, baseline=serial.ours)
    ray.note += f"; the head took {head_seconds:.0f} s to start, not counted"
    return [*rows, ray]


def _sweep(bench: Bench, mode: str, workers: int, launcher: list[str], env: dict | None = None,
           baseline: float | None = None) -> Row:
    walls, overheads, further_jobs, fits = [], [], [], []
    for index in range(min(bench.rounds, MAX_ROUNDS)):
        sizes = (FEW_JOBS, JOBS) if index % 2 == 0 else (JOBS, FEW_JOBS)  # neither always goes first
        timed = {jobs: _timed_sweep(bench, mode, jobs, launcher, env) for jobs in sizes}
        (few_wall, few_fits), (wall, job_fits) = timed[FEW_JOBS], timed[JOBS]
        walls.append(wall)
        fits.append(sum(job_fits))
        overheads.append((wall * workers - sum(job_fits)) / JOBS)
        further_jobs.append(((wall - few_wall) * workers - (sum(job_fits) - sum(few_fits))) / (JOBS - FEW_JOBS))
    return Row(f"sweep of {JOBS} jobs: {mode} ({workers} worker{'s' if workers > 1 else ''})", "s",
               statistics.median(walls), baseline=baseline, ours_range=(min(walls), max(walls)),
               target="per-job overhead <= 1 s, both ways",
               note=f"total fit {statistics.median(fits):.0f} s; per-job overhead {_spread(overheads)} over the "
                    f"whole command, {_spread(further_jobs)} a further job")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"


def _timed_sweep(bench: Bench, mode: str, jobs: int, launcher: list[str],
                 env: dict | None) -> tuple[float, list[float]]:
    """The wall seconds of a sweep of `jobs` seeds and the fit seconds its child runs logged."""
    experiment = f"bench-sweep-{mode.lower()}-{jobs}"
    seeds = ",".join(str(seed) for seed in range(1, jobs + 1))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tfrexp", "-m", f"trainer.seed={seeds}", *SETTINGS, *launcher,
                             f"tracking.experiment={experiment}", *bench.overrides()],
                            capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the {mode} sweep failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return wall, _children_fit_seconds(bench, experiment, jobs)


def _children_fit_seconds(bench: Bench, experiment: str, jobs: int) -> list[float]:
    children = latest_sweep_children(f"sqlite:///{bench.work_dir}/mlflow.db", experiment)
    if len(children) != jobs or any(run.info.status != "FINISHED" for run in children):
        raise RuntimeError(f"{experiment}: expected {jobs} finished children, got "
                           f"{[run.info.status for run in children]}")
    return [run.data.metrics["fit_seconds"] for run in children]
