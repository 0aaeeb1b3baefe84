"""What every benchmark case shares: the result row, timing, and the correctness guards.

Every pipeline is first checked once, outside the timing, to deliver every example exactly once with the
right content, and each timed epoch checks its count, so a fast wrong pipeline cannot win.

The things a ratio compares are timed interleaved: one warm-up round, then each of them once per round for
several rounds, in a rotating order, and the ratio is taken within each round. This shared machine's speed
shifts by up to 2x from one minute to the next (in one process, the same training epoch ran at about 2,000
and about 4,000 images/s in turn), so figures measured minutes apart do not compare; two taken in the same
round mostly fall in the same spell. A row gives the median over the rounds and the spread (lowest-highest).
"""

from __future__ import annotations

import collections
import hashlib
import statistics
import time
from dataclasses import dataclass, field
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
    ours_range: tuple[float, float] | None = None  # lowest and highest over the rounds
    # Per round: ours over the baseline, ours over the ceiling (taken within a round, see the module's doc).
    ratios: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.ratios:
            return statistics.median(self.ratios)
        return self.ours / self.baseline if self.baseline else None

    @property
    def share_of_ceiling(self) -> float | None:
        if self.shares:
            return statistics.median(self.shares)
        return self.ours / self.ceiling if self.ceiling else None

    @property
    def ratio_range(self) -> tuple[float, float] | None:
        return (min(self.ratios), max(self.ratios)) if self.ratios else None

    @property
    def share_range(self) -> tuple[float, float] | None:
        return (min(self.shares), max(self.shares)) if self.shares else None


@dataclass
class Bench:
    """What every case shares: where to write, how often to repeat, the MNIST settings."""

    work_dir: Path
    rounds: int
    catdog_images: int
    writer_photos: int = 5000

    def overrides(self, *extra: str) -> list[str]:
        return [f"paths.output_dir={self.work_dir}", *extra]

    def settings(self, *overrides: str) -> tuple[Config, ExampleSource]:
        return run_context.check(run_context.compose(*self.overrides(*overrides)))


def interleaved_seconds(runs: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """The seconds of each run in each round: `warmup` untimed rounds, then `rounds` rounds in which every run
    goes once, the order rotated by one each round (so none always runs first, or right after another)."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def rate_row(case: str, unit: str, work: float, seconds: dict[str, list[float]], ours: str,
             baseline: str | None = None, ceiling: str | None = None, **details: str) -> Row:
    """A row of rates (`work` per second) from interleaved timings: medians, and the ratios within rounds."""
    rates = {name: [work / value for value in values] for name, values in seconds.items()}

    def paired(other: str | None) -> list[float]:
        return [mine / theirs for mine, theirs in zip(rates[ours], rates[other])] if other else []

    return Row(case, unit, statistics.median(rates[ours]),
               baseline=statistics.median(rates[baseline]) if baseline else None,
               ceiling=statistics.median(rates[ceiling]) if ceiling else None,
               ours_range=(min(rates[ours]), max(rates[ours])), ratios=paired(baseline), shares=paired(ceiling),
               **details)


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The median seconds of `repeats` runs after `warmup` untimed ones (one thing, timed on its own)."""
    return statistics.median(interleaved_seconds({"run": run}, repeats, warmup)["run"])


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


def timed_epoch(dataset: tf.data.Dataset, count: int, name: str, passes: int = 1) -> Callable[[], None]:
    """`passes` epochs one after the other, each checked to deliver `count` examples (an element is (images,
    labels) batches, or one batch of records not parsed). Several passes make a timing long enough (about a
    second here) that a short stall of the machine does not decide it."""
    def run() -> None:
        for _ in range(passes):
            delivered = 0
            for element in dataset:
                delivered += _batch_size(element, name)
            if delivered != count:
                raise RuntimeError(f"{name}: delivered {delivered} examples, expected {count}")
    return run


def _batch_size(element: object, name: str) -> int:
    if isinstance(element, tf.Tensor) and element.shape.rank:
        return int(element.shape[0])
    if isinstance(element, tuple) and len(element) == 2 and isinstance(element[1], tf.Tensor) and element[1].shape.rank:
        return int(element[1].shape[0])
    raise RuntimeError(f"{name}: an element is neither (images, labels) batches nor one batch: {element!r:.200}")


def epoch_seconds(epochs: dict[str, tuple[tf.data.Dataset, int]], count: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per epoch of each (dataset, passes) in each round: every timing runs its dataset's `passes`
    epochs (timed_epoch), the datasets timed in turns (interleaved_seconds), each timing divided by its passes."""
    timings = interleaved_seconds({name: timed_epoch(dataset, count, name, passes)
                                   for name, (dataset, passes) in epochs.items()}, rounds)
    return {name: [value / epochs[name][1] for value in values] for name, values in timings.items()}


def in_memory_ceiling(images, labels, batch_size: int) -> tf.data.Dataset:
    """The fastest shuffled batches of these arrays tf.data gives here: a permutation of indices, batched,
    each batch gathered in one op, in parallel, prefetched. Every example exactly once per epoch."""
    images, labels = tf.constant(images), tf.constant(labels)
    indices = tf.data.Dataset.range(len(labels)).shuffle(len(labels), reshuffle_each_iteration=True)
    return (indices.batch(batch_size)
            .map(lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .prefetch(tf.data.AUTOTUNE))
