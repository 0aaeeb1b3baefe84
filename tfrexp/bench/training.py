"""Cases 4 and 5: training and start-up, measured on real runs of the experiment (the Python API in this
process, the `tfrexp` command in a child process), read back from what the runs report."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from tfrexp import api
from tfrexp.bench.measure import Bench, Row, median_seconds
from tfrexp.records.writer import ensure_records

TRAINING_SLICE = 6000  # examples per split: a few hundred steps, enough for the per-epoch figures to settle


def bench_training(bench: Bench) -> list[Row]:
    """One epoch of the default config on a slice of MNIST: throughput and the share of step time spent
    waiting for input, as every run measures and logs them."""
    overrides = bench.overrides(f"dataset.max_examples_per_split={TRAINING_SLICE}", "trainer.epochs=1",
                                "trainer.verbose=0", "tracking.log_model=false", "tracking.experiment=bench")
    result = api.run(overrides)
    metrics = MlflowClient(result.tracking_uri).get_run(result.run_id).data.metrics
    rows = [Row("training: default config, 1 epoch on a 6,000-image slice of MNIST", "examples/s",
                metrics["examples_per_second"], target="input wait < 5%",
                note=f"input wait {metrics['input_wait_share']:.1%} of the epoch; fit {result.fit_seconds:.1f} s")]
    if bench.full:
        rows.append(time_to_accuracy(bench, 0.99))
    return rows


def time_to_accuracy(bench: Bench, target: float) -> Row:
    """A whole run of the default config on full MNIST; its fit time and test accuracy."""
    started = time.perf_counter()
    result = api.run(bench.overrides("trainer.verbose=0", "tracking.log_model=false", "tracking.experiment=bench"))
    seconds = time.perf_counter() - started
    accuracy = result.test_metrics["test_accuracy"]
    reached = "reached" if accuracy >= target else "NOT reached"
    return Row(f"training: default config to {target:.0%} test accuracy (whole run)", "s", seconds,
               note=f"test accuracy {accuracy:.4f}, {reached}; fit {result.fit_seconds:.0f} s")


def bench_startup(bench: Bench) -> list[Row]:
    settings, source = bench.settings()
    ensure_records(source, settings.writer, settings.paths.records_dir)  # built before timing
    reuse = median_seconds(lambda: ensure_records(source, settings.writer, settings.paths.records_dir),
                           bench.repeats)
    launches = [_launch_to_first_step(bench) for _ in range(max(1, bench.repeats - 1))]
    return [
        Row("start-up: reuse check (fingerprint + manifest)", "s", reuse, target="< 0.5 s"),
        Row("start-up: `tfrexp` launch to first training step", "s", statistics.median(launches),
            note="records already built; includes Python, TensorFlow and MLflow start"),
    ]


def _launch_to_first_step(bench: Bench) -> float:
    """A whole `tfrexp` process on a small slice; the run logs when its first step ended (startup_seconds)."""
    experiment = "bench-startup"
    subprocess.run([sys.executable, "-m", "tfrexp", *bench.overrides("dataset.max_examples_per_split=500",
                    "trainer.epochs=1", "trainer.verbose=0", "tracking.log_model=false",
                    f"tracking.experiment={experiment}")], check=True, capture_output=True, text=True)
    client = MlflowClient(f"sqlite:///{bench.work_dir}/mlflow.db")
    [latest] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                  order_by=["attributes.start_time DESC"], max_results=1)
    return latest.data.metrics["startup_seconds"]
