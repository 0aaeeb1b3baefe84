"""Write a data set's splits as sharded TFRecords, or reuse the finished version with the same fingerprint.

The version is planned as shard tasks (records/shards.py) that writer.engine runs (records/engines.py);
this module alone writes the manifest and the TFDS metadata and publishes.

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
import logging
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
from tfrexp.records import engines, shards
from tfrexp.records.examples import ExampleSource
from tfrexp.records.manifest import (
    MANIFEST_NAME,
    Manifest,
    RecordSettings,
    SplitInfo,
    fingerprint,
    read_manifest,
)
from tfrexp.records.schema import RecordSchema
from tfrexp.records.tfds_metadata import write_tfds_metadata

log = logging.getLogger(__name__)


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
    examples = source.examples(PixelEncoder(writer.image_encoding, writer.jpeg_quality))
    tasks = shards.plan(source.name, source.image_shape, examples, writer)
    total = sum(len(task.items) for task in tasks)
    started = time.perf_counter()
    with tqdm(total=total, desc=f"{source.name} records", unit="img", disable=None, mininterval=0.5) as progress:
        results = engines.run_tasks(tasks, directory, writer, examples.decodes_files, progress.update)
    seconds = time.perf_counter() - started
    for leftover in shards.remove_partials(directory):
        log.warning("removed %s, left by a shard task that died (its rerun wrote the shard)", leftover.name)
    written = {split: SplitInfo([result.shard for result in results if result.split == split])
               for split in examples.splits}
    skipped = [item.as_record() for item in examples.skipped]
    skipped += [item.as_record() for result in results for item in result.skipped]
    for split, info in written.items():
        if info.num_examples == 0:
            raise DataError(f"split {split!r} of {source.name}: none of its {len(examples.splits[split])} files is "
                            "a usable image")
    kept = sum(info.num_examples for info in written.values())
    log.info("%s: %d examples in %d shards, %.1f MB, %.2f s (%.0f examples/s, writer.engine=%s)", source.name, kept,
             len(results), sum(result.shard.num_bytes for result in results) / 1e6, seconds,
             kept / max(seconds, 1e-9), writer.engine.value)
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
