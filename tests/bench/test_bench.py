"""The benchmark's correctness guards, and one small run of the suite."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfrexp.bench import cli
from tfrexp.bench.measure import check_epoch, digests, timed_epoch

IMAGES = np.arange(20 * 4, dtype=np.uint8).reshape(20, 2, 2, 1)
LABELS = np.arange(20, dtype=np.int64) % 3


def _epoch(images=IMAGES, labels=LABELS):
    return tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(20, seed=1).batch(6)


def test_the_right_epoch_passes_in_any_order():
    check_epoch(_epoch(), digests(IMAGES, LABELS), "right")
    timed_epoch(_epoch(), 20, "right")()


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


@pytest.mark.slow
def test_the_catdog_case_runs_and_writes_its_report(tmp_path, capsys):
    cli.main(["--cases", "catdog", "--catdog-images", "40", "--repeats", "1", "--output", str(tmp_path)])
    [report_file] = tmp_path.glob("bench-*.json")
    report = json.loads(report_file.read_text())
    assert [row["case"].split(",")[-1].strip() for row in report["rows"]] == [
        "records (raw) vs JPEG folder", "records (png) vs JPEG folder", "records (jpeg) vs JPEG folder"]
    assert all(row["ours"] > 0 and row["baseline"] > 0 for row in report["rows"])
    assert report["machine"]["cores"] >= 1 and "| catdog: 40 photos" in capsys.readouterr().out
