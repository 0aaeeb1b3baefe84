"""What every benchmark case shares: the result row, timing, and the correctness guards.

Every pipeline is first checked once, outside the timing, to deliver every example exactly once with the
right content, and each timed epoch checks its count, so a fast wrong pipeline cannot win.
"""

from __future__ import annotations

import collections
import hashlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from tfrexp import run_context
from tfrexp.config.schema import Config
from tfrexp.records.examples import ExampleSource


@dataclass
class Row:
    case: str
    unit: str
    ours: float
    baseline: float | None = None  # the obvious way
    ceiling: float | None = None  # the fastest this work can go here (e.g. arrays already in memory)
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.baseline else None

    @property
    def share_of_ceiling(self) -> float | None:
        return self.ours / self.ceiling if self.ceiling else None


@dataclass
class Bench:
    """What every case shares: where to write, how often to repeat, the MNIST settings."""

    work_dir: Path
    repeats: int
    catdog_images: int
    writer_photos: int = 5000

    def overrides(self, *extra: str) -> list[str]:
        return [f"paths.output_dir={self.work_dir}", *extra]

    def settings(self, *overrides: str) -> tuple[Config, ExampleSource]:
        return run_context.check(run_context.compose(*self.overrides(*overrides)))


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def digests(images: np.ndarray, labels: np.ndarray) -> collections.Counter:
    """A multiset of per-example digests of pixels and label."""
    flat = images.reshape(len(images), -1)
    return collections.Counter(hashlib.blake2b(row.tobytes() + int(label).to_bytes(8, "little"),
                                               digest_size=12).digest() for row, label in zip(flat, labels))


def check_epoch(dataset: tf.data.Dataset, expected: collections.Counter, name: str) -> None:
    """One untimed epoch: every example exactly once, with the right pixels and label."""
    seen: collections.Counter = collections.Counter()
    for images, labels in dataset.as_numpy_iterator():
        seen.update(digests(images, labels))
    if seen != expected:
        missing, extra = sum((expected - seen).values()), sum((seen - expected).values())
        raise RuntimeError(f"{name}: the epoch is wrong ({missing} examples missing or altered, {extra} extra)")


def timed_epoch(dataset: tf.data.Dataset, count: int, name: str) -> Callable[[], None]:
    def run() -> None:
        delivered = 0
        for _, labels in dataset:
            delivered += int(labels.shape[0])
        if delivered != count:
            raise RuntimeError(f"{name}: delivered {delivered} examples, expected {count}")
    return run
