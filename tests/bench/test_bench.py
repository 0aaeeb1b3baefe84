"""The benchmark's correctness guards, and one small run of the suite."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfrexp.bench import cli
from tfrexp.bench import measure
from tfrexp.bench.measure import check_epoch, digests, epoch_seconds, interleaved_seconds, rate_row, timed_epoch

IMAGES = np.arange(20 * 4, dtype=np.uint8).reshape(20, 2, 2, 1)
LABELS = np.arange(20, dtype=np.int64) % 3


def _epoch(images=IMAGES, labels=LABELS):
    return tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(20, seed=1).batch(6)


def test_the_right_epoch_passes_in_any_order():
    check_epoch(_epoch(), digests(IMAGES, LABELS), "right")
    timed_epoch(_epoch(), 20, "right")()
    timed_epoch(_epoch().map(lambda images, labels: labels), 20, "batches of one tensor")()


@pytest.mark.parametrize(
    ("wrong", "complaint"),
    [
        (_epoch().unbatch().skip(1).batch(6), "1 examples missing"),
        (_epoch().unbatch().take(19).concatenate(_epoch().unbatch().take(1)).batch(6), "1 extra"),
        (_epoch(IMAGES + 1), "20 examples missing or altered"),
        (_epoch(labels=(LABELS + 1) % 3), "20 examples missing or altered"),
    ],
)
def test_a_wrong_epoch_is_refused(wrong, complaint):
    with pytest.raises(RuntimeError, match=complaint):
        check_epoch(wrong, digests(IMAGES, LABELS), "wrong")


def test_a_short_timed_epoch_is_refused():
    with pytest.raises(RuntimeError, match="delivered 19 examples, expected 20"):
        timed_epoch(_epoch().unbatch().skip(1).batch(6), 20, "short")()
    with pytest.raises(RuntimeError, match="delivered 19 examples, expected 20"):
        timed_epoch(_epoch().unbatch().skip(1).batch(6).map(lambda images, labels: images), 20, "short")()


@pytest.mark.parametrize("element", [lambda images, labels: {"labels": labels},
                                     lambda images, labels: (labels, images, labels),
                                     lambda images, labels: (images, labels[0])])
def test_an_element_that_is_not_a_batch_is_refused(element):
    with pytest.raises(RuntimeError, match="neither .images, labels. batches nor one batch"):
        timed_epoch(_epoch().map(element), 20, "odd")()


@pytest.mark.slow
def test_the_catdog_case_runs_and_writes_its_report(tmp_path, capsys):
    cli.main(["--cases", "catdog", "--catdog-images", "40", "--rounds", "1", "--output", str(tmp_path)])
    [report_file] = tmp_path.glob("bench-*.json")
    report = json.loads(report_file.read_text())
    assert [row["case"].split(",")[-1].strip() for row in report["rows"]] == [
        "records (raw) vs JPEG folder", "records (png) vs JPEG folder", "records (jpeg) vs JPEG folder",
        "raw records read but not parsed"]
    assert all(row["ours"] > 0 and row["ceiling"] > 0 for row in report["rows"])
    assert all(row["baseline"] > 0 for row in report["rows"][:3])  # the records against the folder
    assert report["machine"]["cores"] >= 1 and "| catdog: 40 photos" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--rounds", "--catdog-images", "--writer-photos"])
def test_a_count_below_one_is_refused_in_one_line(option, tmp_path, capsys):
    """--rounds 0 ran every case and then ended in a StatisticsError traceback (a median of no timings)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--cases", "catdog", option, "0", "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"argument {option}: must be a whole number >= 1, not '0'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before any case ran


def test_bad_mnist_files_end_the_bench_in_one_line(tmp_path, monkeypatch, capsys):
    """It was a 20-line DataError traceback, where the other commands print one line."""
    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (data / name).write_bytes(b"not an IDX file")
    monkeypatch.setenv("TFREXP_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["--cases", "writer", "--output", str(tmp_path / "bench")])
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("tfrexp-bench: error: ") and "-idx" in last and "Traceback" not in last


@pytest.mark.slow
def test_the_writer_case_writes_the_photos_with_each_engine_against_one_core(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from helpers import user_environment

    bench = subprocess.run([str(Path(sys.executable).with_name("tfrexp-bench")), "--cases", "writer", "--writer-photos",
                            "40", "--rounds", "1", "--output", str(tmp_path)], env=user_environment(),
                           capture_output=True, text=True, timeout=900)
    assert bench.returncode == 0, bench.stderr[-3000:]
    # Only the bench's own lines: TensorFlow's start-up notices (oneDNN, no CUDA driver) were printed, here and
    # by each writer worker.
    assert not [line for line in bench.stderr.splitlines() if line.startswith(("I0000", "E0000", "W0000"))]
    [report] = tmp_path.glob("bench-*.json")
    rows = [row for row in json.loads(report.read_text())["rows"] if "photos" in row["case"]]
    assert [row["case"].split(", ", 1)[1] for row in rows] == [
        "engine=local, 1 worker(s)", "engine=local, 2 worker(s)", "engine=ray, 1 worker(s)", "engine=ray, 2 worker(s)"]
    for row in rows:
        assert row["ours"] > 0 and row["ceiling"] > 0 and "every photo kept" in row["note"]
    assert not list((tmp_path / "writer-records").glob("*")), "its records are removed after"


def test_interleaved_runs_take_turns_and_rotate_who_goes_first():
    order = []
    runs = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    seconds = interleaved_seconds(runs, rounds=3, warmup=1)
    assert order == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {name: len(values) for name, values in seconds.items()} == {"a": 3, "b": 3, "c": 3}


def test_a_rate_row_takes_its_ratios_within_each_round():
    """Round 2 ran at half speed throughout: its ratio is the same as round 1's, where dividing medians taken
    in different rounds would not be."""
    seconds = {"ours": [1.0, 2.0, 1.0], "base": [5.0, 10.0, 4.0], "ceiling": [0.8, 1.6, 0.5]}
    row = rate_row("case", "items/s", 100, seconds, "ours", "base", "ceiling")
    assert row.ours == 100 and row.ours_range == (50, 100)
    assert row.ratios == [5.0, 5.0, 4.0] and row.ratio == 5.0 and row.ratio_range == (4.0, 5.0)
    assert row.shares == [0.8, 0.8, 0.5] and row.share_of_ceiling == 0.8
    assert "| 5.00x (4.00-5.00) |" in cli.render([row], {"cores": 2, "gpu": "none", "tensorflow": "x"})


def test_epoch_seconds_runs_each_dataset_its_passes_and_divides_by_them(monkeypatch):
    """On a clock that ticks one second per reading, each timing reads 1 s whatever it ran: per epoch, that is
    1 / passes; every pass is checked to deliver the whole epoch."""
    ticks = iter(range(1000))
    monkeypatch.setattr(measure.time, "perf_counter", lambda: float(next(ticks)))
    epochs = []
    counted = _epoch().map(lambda images, labels: (images, tf.py_function(
        lambda batch: epochs.append(1) or batch, [labels], tf.int64)))
    seconds = epoch_seconds({"one pass": (_epoch(), 1), "four passes": (counted, 4)}, 20, rounds=2)
    assert seconds == {"one pass": [1.0, 1.0], "four passes": [0.25, 0.25]}
    assert len(epochs) == 4 * (2 + 1) * 4  # batches of 6 from 20: 4 a pass; 4 passes; 2 rounds and a warm-up


def test_a_sweep_row_leaves_the_one_time_start_up_out_of_a_further_jobs_overhead(monkeypatch, tmp_path):
    """Sweeps of 2 and 8 jobs in two workers that each pay 10 s of start-up and 3 s of overhead and 2 s of fit a
    job: over the whole command a job costs its share of the start-up too, a further job only its 3 s. The two
    sizes take turns, the 2 jobs first in the first round; the second round's 8 jobs ran 0.5 s slower."""
    from tfrexp.bench import sweeps

    order = []

    def timed_sweep(bench, mode, jobs, launcher, env):
        order.append(jobs)
        return 10 + (jobs / 2) * (3 + 2) + (0.5 if len(order) == 3 else 0), [2.0] * jobs

    monkeypatch.setattr(sweeps, "_timed_sweep", timed_sweep)
    row = sweeps._sweep(measure.Bench(tmp_path, rounds=9, catdog_images=1), "joblib", 2, [])
    assert order == [2, 8, 8, 2, 2, 8]  # 3 rounds at most
    assert row.ours == 30.0 and row.ours_range == (30.0, 30.5)
    assert row.note == ("total fit 16 s; per-job overhead 5.5 s (5.5-5.6) over the whole command, "
                        "3.0 s (3.0-3.2) a further job")
