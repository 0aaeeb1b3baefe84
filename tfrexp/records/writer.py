"""Write a data set's splits as sharded TFRecords, or reuse the finished version with the same fingerprint.

A version is written into a temporary directory beside its final place and published with one rename,
under a per-fingerprint file lock: a killed writer never leaves something that looks finished, and two
processes never write the same version.
"""

from __future__ import annotations

import collections
import datetime
import errno
import fcntl
import importlib.metadata
import itertools
import logging
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import tensorflow as tf
from tqdm import tqdm

from tfrexp.config.schema import WriterConfig
from tfrexp.errors import DataError, RecordsError
from tfrexp.records.encoding import PixelEncoder
from tfrexp.records.examples import ExampleSource, Skipped, SplitExamples
from tfrexp.records.manifest import (
    MANIFEST_NAME,
    Manifest,
    RecordSettings,
    Shard,
    SplitInfo,
    fingerprint,
    read_manifest,
)
from tfrexp.records.naming import shard_name
from tfrexp.records.reader import compression_type
from tfrexp.records.schema import ExampleEncoder, RecordSchema
from tfrexp.records.tfds_metadata import write_tfds_metadata

log = logging.getLogger(__name__)

_TFRECORD_FRAMING_BYTES = 16  # length + two CRCs around each record


@dataclass
class RecordSet:
    """A finished record version: where it is, what its manifest says, and whether it was reused."""

    directory: Path
    manifest: Manifest
    reused: bool


def ensure_records(source: ExampleSource, writer: WriterConfig, records_dir: Path) -> RecordSet:
    """Reuse the version whose fingerprint matches the source and settings, or write it."""
    version, identity = version_fingerprint(source, writer)
    root = Path(records_dir) / source.name
    final = root / version
    manifest = None if writer.force else _finished_version(final)
    if manifest is not None:
        log.info("reusing records %s", final)
        return RecordSet(final, manifest, reused=True)

    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(lock_path(root, version)):
        # Another process may have published this version while we waited for the lock.
        manifest = None if writer.force else _finished_version(final)
        if manifest is not None:
            log.info("reusing records %s (written by another process)", final)
            return RecordSet(final, manifest, reused=True)
        _remove_leftovers(root, version)
        staging = root / f".tmp-{version}-{os.getpid()}"
        try:
            staging.mkdir()
            manifest = _write_version(staging, source, writer, version, identity)
            _publish(staging, final)
        except (OSError, tf.errors.ResourceExhaustedError) as error:
            if isinstance(error, OSError) and error.errno != errno.ENOSPC:
                raise
            raise RecordsError(f"no space left on the device of {root} while writing {source.name} records; "
                               "nothing was published and earlier versions are untouched") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote records %s", final)
    return RecordSet(final, manifest, reused=False)


def _finished_version(directory: Path) -> Manifest | None:
    """The manifest of the finished version in `directory`, every shard it lists there with its size; None
    when there is no finished version. Without the lock a writer with writer.force=true may be swapping the
    version at this moment: what vanished while we looked counts as not there, and the caller then waits
    for the lock, behind which the new version is whole."""
    if not (directory / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = read_manifest(directory)
        for info in manifest.splits.values():
            for shard in info.shards:
                path = directory / shard.file
                if not path.is_file():
                    raise RecordsError(f"{path}: missing; the version is incomplete. Rebuild it with "
                                       "writer.force=true")
                if path.stat().st_size != shard.num_bytes:
                    raise RecordsError(f"{path}: {path.stat().st_size} bytes, the manifest says {shard.num_bytes}. "
                                       "Rebuild it with writer.force=true")
    except RecordsError:
        if not (directory / MANIFEST_NAME).is_file():
            return None  # replaced while we looked
        raise
    return manifest


def version_fingerprint(source: ExampleSource, writer: WriterConfig) -> tuple[str, dict]:
    """The fingerprint of the version a source and writer settings ask for, and the source identity."""
    identity = source.identity()
    return fingerprint(identity, RecordSettings.of(writer)), identity


def lock_path(root: Path, version: str) -> Path:
    """The file whose flock its writer holds; beside the versions, so a finished version stays clean."""
    return root / f".{version}.lock"


def _write_version(
    directory: Path, source: ExampleSource, writer: WriterConfig, version: str, identity: dict
) -> Manifest:
    encoder = PixelEncoder(writer.image_encoding, writer.jpeg_quality)
    with source.examples(encoder, writer.workers) as examples:
        skipped = [item.as_record() for item in examples.skipped]
        written = {}
        for split, items in examples.splits.items():
            written[split], split_skipped = write_split(directory, source.name, source.image_shape, split, items,
                                                        writer)
            skipped += [item.as_record() for item in split_skipped]
    kept = sum(info.num_examples for info in written.values())
    if examples.files_found is not None:
        log.info("%s: kept %d, skipped %d%s", source.name, kept, len(skipped), _reasons(skipped))
        if kept + len(skipped) != examples.files_found:
            raise RuntimeError(f"{kept} kept + {len(skipped)} skipped != {examples.files_found} files found: a bug "
                               "in tfrexp's accounting, please report it")
    manifest = Manifest(
        dataset=source.name,
        fingerprint=version,
        schema=RecordSchema(list(source.image_shape), writer.image_encoding),
        splits=written,
        class_names=examples.class_names,
        writer=RecordSettings.of(writer),
        source=identity,
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        tool_version=importlib.metadata.version("tfrexp"),
        skipped=skipped,
        files_found=examples.files_found,
    )
    write_tfds_metadata(directory, manifest)  # so that TensorFlow Datasets reads the version as it is
    # Written last: its presence marks a finished version.
    (directory / MANIFEST_NAME).write_text(manifest.to_json())
    return manifest


def write_split(
    directory: Path, name: str, image_shape: list[int], split: str, items: SplitExamples, writer: WriterConfig
) -> tuple[SplitInfo, list[Skipped]]:
    """Shard i takes the items [i*n/k, (i+1)*n/k) of the stream; skipped items leave no record."""
    encoder = ExampleEncoder()
    stream = iter(items.stream)
    first = next(stream, None)
    if first is None:
        raise DataError(f"split {split!r} of {name} is empty")
    sample = len(encoder.encode(*first)) if not isinstance(first, Skipped) else math.prod(image_shape)
    num_shards = max(1, min(items.count, math.ceil(items.count * (sample + _TFRECORD_FRAMING_BYTES)
                                                   / (writer.shard_size_mb * 1e6))))
    options = tf.io.TFRecordOptions(compression_type=compression_type(writer.compression))
    started = time.perf_counter()
    shards, skipped = [], []
    position = 0
    pending = itertools.chain([first], stream)
    with tqdm(total=items.count, desc=f"{name}/{split}", unit="img", disable=None,
              mininterval=0.5) as progress:
        for index in range(num_shards):
            end = (index + 1) * items.count // num_shards
            path = directory / shard_name(name, split, index, num_shards)
            written = 0
            with tf.io.TFRecordWriter(str(path), options) as out:
                for item in itertools.islice(pending, end - position):
                    if isinstance(item, Skipped):
                        skipped.append(item)
                    else:
                        out.write(encoder.encode(*item))
                        written += 1
            progress.update(end - position)
            position = end
            shards.append(Shard(file=path.name, num_examples=written, num_bytes=path.stat().st_size))
    count = sum(shard.num_examples for shard in shards)
    if count == 0:
        raise DataError(f"split {split!r} of {name}: none of its {items.count} files is a usable image")
    seconds = time.perf_counter() - started
    log.info(
        "%s/%s: %d examples in %d shards, %.1f MB, %.2f s (%.0f examples/s)",
        name, split, count, num_shards, sum(s.num_bytes for s in shards) / 1e6, seconds,
        count / max(seconds, 1e-9),
    )
    return SplitInfo(shards), skipped


def _reasons(skipped: list[dict]) -> str:
    """' (empty file: 2, not an image ...: 1)' -- reasons without the per-file detail in parentheses."""
    if not skipped:
        return ""
    counts = collections.Counter(item["reason"].split(" (")[0] for item in skipped)
    return " (" + ", ".join(f"{reason}: {n}" for reason, n in counts.most_common()) + ")"


def _publish(staging: Path, final: Path) -> None:
    """Move the finished staging directory to its final name; an older copy is replaced, never merged."""
    if final.exists():
        retired = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, retired)
        os.rename(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, final)


def _remove_leftovers(root: Path, version: str) -> None:
    """Staging or retired directories of this version are orphans once we hold its lock."""
    for leftover in [*root.glob(f".tmp-{version}-*"), *root.glob(f".old-{version}-*")]:
        log.warning("removing the unfinished %s left by an interrupted writer", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """An flock on `path`: the kernel releases it when the holder dies, so no lock is ever stale."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
