"""Check a record version against its manifest, and show what it holds: the work of `tfrexp-records verify`
and `inspect` (tfrexp/records_cli.py), and of a run that meets a bad shard.

TensorFlow is imported where records are read, not with the module: the command imports it only once its
folders are known to exist, as a run does (its C++ start-up lines held back).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfrexp.records.manifest import MANIFEST_NAME, Manifest, read_manifest


@dataclass(frozen=True)
class ShardCheck:
    split: str
    file: str
    expected: int
    found: int
    problem: str | None  # None: every record's CRC is right, it decodes, and the count matches


def verify_version(directory: Path, splits: list[str] | None = None) -> list[ShardCheck]:
    """Read every record of every shard: CRCs (TensorFlow checks them), decoding, counts against the manifest."""
    manifest = read_manifest(directory)
    checks = []
    for split, info in manifest.splits.items():
        if splits is not None and split not in splits:
            continue
        for shard in info.shards:
            checks.append(_check_shard(directory / shard.file, split, shard.num_examples, manifest))
    return checks


def bad_shards_message(directory: Path, splits: list[str] | None = None) -> str | None:
    """One line naming the bad shards and how to rebuild, or None when all are good."""
    bad = [check for check in verify_version(directory, splits) if check.problem]
    if not bad:
        return None
    listed = "; ".join(f"{directory / check.file}: {check.problem}" for check in bad)
    return f"corrupt records: {listed}. Rebuild them with writer.force=true"


def _check_shard(path: Path, split: str, expected: int, manifest: Manifest) -> ShardCheck:
    import tensorflow as tf

    from tfrexp.records import reader

    if not path.is_file():
        return ShardCheck(split, path.name, expected, 0, "missing")
    dataset = reader.batch_and_parse(reader.open_shard(str(path), manifest.compression), manifest.image_encoding,
                                     manifest.image_shape, batch_size=512)
    found = 0
    try:
        for _, labels in dataset:
            found += int(labels.shape[0])
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as error:
        reason = error.message.split(" [Op:")[0].split("}}")[-1].strip()
        found = _readable_records(path, manifest)  # the batches above count in 512s
        return ShardCheck(split, path.name, expected, found, f"unreadable after {found} records ({reason})")
    if found != expected:
        return ShardCheck(split, path.name, expected, found, f"{found} records, the manifest says {expected}")
    return ShardCheck(split, path.name, expected, found, None)


def _readable_records(path: Path, manifest: Manifest) -> int:
    """How many records of a bad shard read (CRC right) before the first that does not, one at a time."""
    import tensorflow as tf

    from tfrexp.records import reader

    count = 0
    try:
        for _ in reader.open_shard(str(path), manifest.compression):
            count += 1
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError):
        pass
    return count


def inspect(directory: Path, examples: int) -> None:
    """Print the version's counts, sizes and schema, and a few decoded examples of its first split."""
    from tfrexp.records import reader

    manifest = read_manifest(directory)
    print(f"{directory}\n  dataset {manifest.dataset}, fingerprint {manifest.fingerprint}, "
          f"written {manifest.created_at} by tfrexp {manifest.tool_version}")
    print(f"  schema: image {manifest.image_shape} {manifest.image_encoding.value}, "
          f"compression {manifest.compression.value}; classes {manifest.class_names}")
    for split, info in manifest.splits.items():
        size = sum(shard.num_bytes for shard in info.shards) / 1e6
        print(f"  {split}: {info.num_examples} examples in {len(info.shards)} shards, {size:.1f} MB")
        for shard in info.shards:
            print(f"    {shard.file}  {shard.num_examples} examples  {shard.num_bytes / 1e6:.2f} MB")
    if manifest.skipped:
        print(f"  skipped files: {len(manifest.skipped)} (listed in {MANIFEST_NAME})")
    split = next(iter(manifest.splits))
    first_shard = manifest.shard_paths(directory, split)[0]
    records = reader.open_shard(str(first_shard), manifest.compression)
    batches = reader.batch_and_parse(records, manifest.image_encoding, manifest.image_shape, max(1, examples))
    for images, labels in batches.take(1):
        for image, label in zip(images.numpy()[:examples], labels.numpy()[:examples]):
            name = manifest.class_names[label]
            print(f"  {split} example: label {label} ({name}), {list(image.shape)} uint8, "
                  f"pixels min {image.min()} mean {np.mean(image):.1f} max {image.max()}")
