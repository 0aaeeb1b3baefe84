"""The same 8-job sweep one job after another, in 2 joblib workers, and as tasks of a local Ray cluster (a
head on 127.0.0.1 with 2 CPUs, started before the clock runs, as a cluster already runs in real use).

Wall time is the whole `tfrexp -m` command; fit time is what each child run logged (`fit_seconds`). The
per-job overhead is the worker time a job spends on anything but fitting (start-up, records check, MLflow,
evaluation, the launcher itself): (wall x workers - total fit) / jobs.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

from tfrexp.bench.measure import Bench, Row
from tfrexp.records.writer import ensure_records
from tfrexp.tracking.store import latest_sweep_children

JOBS = 8
WORKERS = 2
SWEEP = ["-m", f"trainer.seed={','.join(str(seed) for seed in range(1, JOBS + 1))}", "model=cnn_small",
         "dataset.max_examples_per_split=2000", "trainer.epochs=1", "trainer.verbose=0", "tracking.log_model=false",
         "tracking.system_metrics=false"]


def bench_sweeps(bench: Bench) -> list[Row]:
    settings, source = bench.settings(*SWEEP[2:])
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
    experiment = f"bench-sweep-{mode.lower()}"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tfrexp", *SWEEP, *launcher, f"tracking.experiment={experiment}",
                             *bench.overrides()], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the {mode} sweep failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    fits = _children_fit_seconds(bench, experiment)
    overhead = (wall * workers - sum(fits)) / JOBS
    return Row(f"sweep of {JOBS} jobs: {mode} ({workers} worker{'s' if workers > 1 else ''})", "s", wall,
               baseline=baseline, target="per-job overhead <= 1 s",
               note=f"total fit {sum(fits):.0f} s; per-job overhead {overhead:.1f} s")


def _children_fit_seconds(bench: Bench, experiment: str) -> list[float]:
    children = latest_sweep_children(f"sqlite:///{bench.work_dir}/mlflow.db", experiment)
    if len(children) != JOBS or any(run.info.status != "FINISHED" for run in children):
        raise RuntimeError(f"{experiment}: expected {JOBS} finished children, got "
                           f"{[run.info.status for run in children]}")
    return [run.data.metrics["fit_seconds"] for run in children]
