"""Cases 4 and 5: training and start-up, measured on real runs of the experiment (the Python API in this
process, the `tfrexp` command in a child process), read back from what the runs report."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from tfrexp import api
from tfrexp.bench.measure import Bench, Row, interleaved_seconds, median_seconds
from tfrexp.records.writer import ensure_records
from tfrexp.tracking.store import latest_run, run_metrics

TRAINING_SLICE = 6000  # examples per split: a few hundred steps, enough for the per-epoch figures to settle


def bench_training(bench: Bench) -> list[Row]:
    """One epoch of the default config on a slice of MNIST: throughput and the share of step time spent
    waiting for input, as every run measures and logs them."""
    overrides = bench.overrides(f"dataset.max_examples_per_split={TRAINING_SLICE}", "trainer.epochs=1",
                                "trainer.verbose=0", "tracking.log_model=false", "tracking.experiment=bench")
    result = api.run(overrides)
    metrics = run_metrics(result.tracking_uri, result.run_id)
    rows = [Row("training: default config, 1 epoch on a 6,000-image slice of MNIST", "examples/s",
                metrics["examples_per_second"], target="input wait < 5%",
                note=f"input wait {metrics['input_wait_share']:.1%} of the epoch; fit {result.fit_seconds:.1f} s")]
    return rows


RECIPES = {"default": [], "walkthrough (experiment=mnist_seed)": ["experiment=mnist_seed"]}
SEEDS = (1, 2, 3, 4, 5)


def bench_time_to_accuracy(bench: Bench) -> list[Row]:
    """The real `tfrexp` command, 5 seeds of each recipe on full MNIST with the records already written: the
    median fit and whole-run seconds, and the mean and lowest test accuracy."""
    settings, source = bench.settings()
    ensure_records(source, settings.writer, settings.paths.records_dir)  # both recipes read these records
    # Seed by seed, the recipes in turn, so that a slower spell of this machine falls on both (see measure.py).
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in RECIPES}
    for seed in SEEDS:
        for index, (name, extra) in enumerate(RECIPES.items()):
            results[name].append(_timed_run(bench, extra, f"tta-{index}-{seed}", seed))
    rows = []
    for name, runs in results.items():
        accuracies = [accuracy for accuracy, _, _ in runs]
        fits = [fit for _, fit, _ in runs]
        rows.append(Row(f"time to accuracy: {name}, {len(runs)} seeds", "fit s (median)", statistics.median(fits),
                        ours_range=(min(fits), max(fits)),
                        target=">= 99.0% mean, >= 98.85% each, <= 10 s fit" if name == "default" else "",
                        note=f"whole run {statistics.median(wall for _, _, wall in runs):.1f} s (median); test "
                             f"accuracy mean {statistics.mean(accuracies):.2%}, min {min(accuracies):.2%}"))
    default, walkthrough = rows
    rows.append(Row("time to accuracy: walkthrough's fit time over the default's", "x",
                    walkthrough.ours / default.ours))
    return rows


def _timed_run(bench: Bench, extra: list[str], run_name: str, seed: int) -> tuple[float, float, float]:
    """(test accuracy, fit seconds, whole-run seconds) of one `tfrexp` process."""
    started = time.perf_counter()
    _tfrexp(bench, *extra, f"trainer.seed={seed}", "trainer.verbose=0", "tracking.log_model=false",
            "tracking.experiment=bench-time-to-accuracy", f"tracking.run_name={run_name}")
    wall = time.perf_counter() - started
    metrics = _latest_run(bench, "bench-time-to-accuracy", run_name).data.metrics
    return metrics["test_accuracy"], metrics["fit_seconds"], wall


def _tfrexp(bench: Bench, *overrides: str) -> None:
    """The `tfrexp` command in a child process; its own error if it fails."""
    result = subprocess.run([sys.executable, "-m", "tfrexp", *bench.overrides(*overrides)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"tfrexp {' '.join(overrides)} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")


def _latest_run(bench: Bench, experiment: str, run_name: str | None = None):
    return latest_run(f"sqlite:///{bench.work_dir}/mlflow.db", experiment, run_name)


def bench_startup(bench: Bench) -> list[Row]:
    """The reuse check, and the `tfrexp` command from launch to its first training step against its floor,
    `import tensorflow` in a fresh process, the two alternating round by round."""
    settings, source = bench.settings()
    ensure_records(source, settings.writer, settings.paths.records_dir)  # built before timing
    reuse = median_seconds(lambda: ensure_records(source, settings.writer, settings.paths.records_dir),
                           bench.rounds)
    # Both from the process's creation, as a run's startup_seconds is; the warm-up round's are dropped.
    seconds: dict[str, list[float]] = {"launch": [], "import tensorflow": []}
    interleaved_seconds({"launch": lambda: seconds["launch"].append(_launch_to_first_step(bench)),
                         "import tensorflow": lambda: seconds["import tensorflow"].append(_import_tensorflow())},
                        bench.rounds)
    launches, imports = seconds["launch"][1:], seconds["import tensorflow"][1:]
    over = [mine - floor for mine, floor in zip(launches, imports)]
    return [
        Row("start-up: reuse check (fingerprint + manifest)", "s", reuse, target="< 0.5 s"),
        Row("start-up: `tfrexp` launch to first training step, over `import tensorflow` in a fresh process", "s",
            statistics.median(over), ours_range=(min(over), max(over)), target="<= 1.5 s",
            note=f"launch to first step {statistics.median(launches):.1f} s, the import "
                 f"{statistics.median(imports):.1f} s (medians; the difference is taken within "
                 "each round); records already built"),
    ]


def _import_tensorflow() -> float:
    """Seconds from a new Python process's creation to the end of its `import tensorflow`."""
    done = subprocess.run([sys.executable, "-c", "import time, psutil, tensorflow; "
                           "print(time.time() - psutil.Process().create_time())"],
                          check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1])


def _launch_to_first_step(bench: Bench) -> float:
    """A whole `tfrexp` process on a small slice; the run logs when its first step ended (startup_seconds)."""
    experiment = "bench-startup"
    _tfrexp(bench, "dataset.max_examples_per_split=500", "trainer.epochs=1", "trainer.verbose=0",
            "tracking.log_model=false", f"tracking.experiment={experiment}")
    return _latest_run(bench, experiment).data.metrics["startup_seconds"]
