"""The `tfrexp-bench` command: runs the chosen cases, prints the table, saves it as JSON (and optionally
as an MLflow run).

Each figure is the median of several rounds after a warm-up, the things a ratio compares timed in the same
rounds (tfrexp/bench/measure.py says why); the training cases read what real runs measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import os
import platform
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tfrexp.errors import TfrexpError, exit_with_error

if TYPE_CHECKING:
    from tfrexp.bench.measure import Bench, Row

# Each case's function, imported when it runs: the writer's worker processes import this module again (it is
# the entrypoint's), and would each pay for TensorFlow's import if it were imported here.
CASES = {"writer": "tfrexp.bench.mnist_io:bench_writers", "input": "tfrexp.bench.mnist_io:bench_input",
         "catdog": "tfrexp.bench.catdog:bench_catdog", "training": "tfrexp.bench.training:bench_training",
         "startup": "tfrexp.bench.training:bench_startup",
         "time_to_accuracy": "tfrexp.bench.training:bench_time_to_accuracy",
         "sweeps": "tfrexp.bench.sweeps:bench_sweeps", "search": "tfrexp.bench.search:bench_search"}
FULL_ONLY = ("time_to_accuracy", "sweeps", "search")  # minutes of training each: with --full, or named in --cases


def case_function(case: str) -> Callable[[Bench], list[Row]]:
    module, function = CASES[case].split(":")
    return getattr(importlib.import_module(module), function)


def machine() -> dict:
    import tensorflow as tf

    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]
    return {"cores": os.cpu_count(), "gpu": ", ".join(gpus) or "none",
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "tensorflow": tf.__version__}


def render(rows: list[Row], host: dict) -> str:
    def number(value: float | None, suffix: str = "", spread: tuple[float, float] | None = None) -> str:
        if value is None:
            return "-"
        text = _figure(value) + suffix
        return f"{text} ({_figure(spread[0])}-{_figure(spread[1])})" if spread else text

    def percent(value: float | None, spread: tuple[float, float] | None) -> str:
        if value is None:
            return "-"
        return f"{value:.0%} ({spread[0]:.0%}-{spread[1]:.0%})" if spread else f"{value:.0%}"

    lines = [f"machine: {host['cores']} cores, GPU: {host['gpu']}, TensorFlow {host['tensorflow']}", "",
             "| case | unit | ours | baseline | ratio | ceiling | share of ceiling | target | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.case} | {row.unit} | {number(row.ours, spread=row.ours_range)} | "
                     f"{number(row.baseline)} | {number(row.ratio, 'x', row.ratio_range)} | {number(row.ceiling)} | "
                     f"{percent(row.share_of_ceiling, row.share_range)} | {row.target} | {row.note} |")
    return "\n".join(lines)


def _figure(value: float) -> str:
    if value < 1:
        return f"{value:.2g}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=None, help=f"comma-separated subset of {','.join(CASES)} (default: all "
                        f"but {','.join(FULL_ONLY)}, which --full adds)")
    parser.add_argument("--rounds", type=_at_least_one, default=9,
                        help="timed rounds after a warm-up (figures are medians, ratios taken within a round)")
    parser.add_argument("--catdog-images", type=_at_least_one, default=2000)
    parser.add_argument("--writer-photos", type=_at_least_one, default=5000,
                        help="photos in the folder the writer case writes")
    parser.add_argument("--full", action="store_true",
                        help="also time to 99%% test accuracy (5 seeds of the default and of the walkthrough's "
                        "recipe), a 2-job and an 8-job sweep serially, in joblib and on Ray, and a search with and "
                        "without pruning")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--mlflow", action="store_true", help="also log the results as an MLflow run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    chosen = args.cases or ",".join(case for case in CASES if args.full or case not in FULL_ONLY)
    cases = [case for case in chosen.split(",") if case]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")

    args.output.mkdir(parents=True, exist_ok=True)
    from tfrexp.config.schema import TrainerConfig
    from tfrexp.training.backend import prepare_backend

    prepare_backend(TrainerConfig())  # TensorFlow imported with its C++ start-up lines held back, as a run does
    from tfrexp.bench.measure import Bench

    bench = Bench(work_dir=args.output.resolve(), rounds=args.rounds, catdog_images=args.catdog_images,
                  writer_photos=args.writer_photos)
    started = time.perf_counter()
    rows = []
    for case in cases:
        case_started = time.perf_counter()
        try:
            rows.extend(case_function(case)(bench))
        except TfrexpError as error:  # missing data, a bad config: one line, as the other commands say it
            exit_with_error(error, "tfrexp-bench")
        print(f"[{case}: {time.perf_counter() - case_started:.0f} s]", file=sys.stderr, flush=True)
    host = machine()
    table = render(rows, host)
    print(table)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    report = {"date": stamp, "machine": host, "seconds": time.perf_counter() - started,
              "command": " ".join(["tfrexp-bench", *(argv if argv is not None else sys.argv[1:])]),
              "rows": [{**asdict(row), "ratio": row.ratio, "share_of_ceiling": row.share_of_ceiling,
                        "ratio_range": row.ratio_range, "share_range": row.share_range} for row in rows]}
    path = args.output / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwritten {path} ({report['seconds']:.0f} s in all)")
    if args.mlflow:
        _log_to_mlflow(report, table)


def _at_least_one(text: str) -> int:
    """A count the bench divides by or takes a median over."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return int(text)


def _log_to_mlflow(report: dict, table: str) -> None:
    from tfrexp import run_context
    from tfrexp.tracking.names import JobIdentity
    from tfrexp.tracking.run import tracked_run

    settings, _ = run_context.check(run_context.compose("tracking.experiment=bench", "tracking.system_metrics=false"))
    with tracked_run(settings.tracking, JobIdentity(f"bench-{report['date']}", {}, None)) as tracked:
        tracked.log_params({f"machine.{key}": value for key, value in report["machine"].items()})
        metrics = {}
        for row in report["rows"]:
            name = re.sub(r"[^a-z0-9]+", "_", row["case"].lower()).strip("_")[:80]  # a metric name MLflow takes
            metrics[f"{name}.ours"] = row["ours"]
            if row["ratio"] is not None:
                metrics[f"{name}.ratio"] = row["ratio"]
        tracked.log_metrics(metrics)
        tracked.log_text(table, "bench.md")
        tracked.log_dict(report, "bench.json")


if __name__ == "__main__":
    main()
