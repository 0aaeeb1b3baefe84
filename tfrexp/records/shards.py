"""A version as shard tasks: the plan (which items of which split go to which shard file) and the task that
writes one shard. The same plan gives the same bytes whichever engine runs the tasks (records/engines.py).

A task writes `<shard>.partial-<pid>` and renames it to the shard's name when whole: a task that dies half-way
(and is run again) never leaves a shard that looks written.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tfrexp.config.schema import Compression, WriterConfig
from tfrexp.errors import DataError
from tfrexp.records.examples import Example, Examples, Skipped
from tfrexp.records.manifest import Shard
from tfrexp.records.naming import shard_name

_TFRECORD_FRAMING_BYTES = 16  # length + two CRCs around each record
PARTIAL = ".partial-"


@dataclass(frozen=True)
class ShardTask:
    """One shard file to write: its items, in order, and how to prepare each (both picklable)."""

    split: str
    file: str
    items: Sequence[Any]
    prepare: Callable[[Any], Example] = field(repr=False)
    compression: Compression


@dataclass(frozen=True)
class ShardResult:
    """What a task reports back: its shard, and the files it left out with why."""

    split: str
    shard: Shard
    skipped: list[Skipped]


def plan(name: str, image_shape: list[int], examples: Examples, writer: WriterConfig) -> list[ShardTask]:
    """Every split cut into shards of about writer.shard_size_mb: shard i of k takes the items [i*n/k, (i+1)*n/k)
    of its split. The size of one record is measured on the split's first item (prepared here, once)."""
    from tfrexp.records.schema import ExampleEncoder

    tasks = []
    for split, items in examples.splits.items():
        if not items:
            raise DataError(f"split {split!r} of {name} is empty")
        first = examples.prepare(items[0])
        sample = (len(ExampleEncoder().encode(*first)) if not isinstance(first, Skipped)
                  else math.prod(image_shape))
        count = len(items)
        num_shards = max(1, min(count, math.ceil(count * (sample + _TFRECORD_FRAMING_BYTES)
                                                 / (writer.shard_size_mb * 1e6))))
        for index in range(num_shards):
            chosen = items[index * count // num_shards:(index + 1) * count // num_shards]
            tasks.append(ShardTask(split, shard_name(name, split, index, num_shards), chosen, examples.prepare,
                                   writer.compression))
    return tasks


def write_shard(directory: Path, task: ShardTask, examples: Iterable[Example]) -> ShardResult:
    """Write the task's examples (its items, prepared by the caller or here) as its shard file in `directory`."""
    import tensorflow as tf

    from tfrexp.records.reader import compression_type
    from tfrexp.records.schema import ExampleEncoder

    encoder, skipped, written = ExampleEncoder(), [], 0
    partial = directory / f"{task.file}{PARTIAL}{os.getpid()}"
    with tf.io.TFRecordWriter(str(partial), tf.io.TFRecordOptions(compression_type(task.compression))) as out:
        for example in examples:
            if isinstance(example, Skipped):
                skipped.append(example)
            else:
                out.write(encoder.encode(*example))
                written += 1
    os.replace(partial, directory / task.file)
    return ShardResult(task.split, Shard(task.file, written, (directory / task.file).stat().st_size), skipped)


class ShardTaskFailed(Exception):
    """What a shard task raised, and the machine it ran on."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(node, reason)  # both in args: the exception crosses processes pickled
        self.node, self.reason = node, reason

    def __str__(self) -> str:
        return f"on {self.node}: {self.reason}"


def run_shard_task(directory: str, task: ShardTask) -> ShardResult:
    """A whole task where it runs (a Ray worker): read and prepare its items, and write its shard."""
    try:
        return write_shard(Path(directory), task, map(task.prepare, task.items))
    except Exception as error:  # noqa: BLE001 -- said where it happened, as one line
        raise ShardTaskFailed(socket.gethostname(), f"{type(error).__name__}: {error}") from None


def remove_partials(directory: Path) -> list[Path]:
    """The partial files of tasks that died (their rerun wrote the shard), removed before publishing."""
    partials = sorted(directory.glob(f"*{PARTIAL}*"))
    for path in partials:
        path.unlink(missing_ok=True)
    return partials
