"""The one template of a shard's file name: TFDS's own, `<dataset>-<split>.tfrecord-00000-of-00004`.

The writer names shards with it, and the TFDS metadata hands TFDS the same template, so that
`tfds.builder_from_directory` finds the shards by the name they were written under.
"""

from __future__ import annotations

# In TFDS's placeholders (tfds.core.ShardedFileTemplate), which `tfds.folder_dataset.write_metadata` takes as is.
SHARD_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
FILE_FORMAT = "tfrecord"


def shard_name(dataset: str, split: str, index: int, count: int) -> str:
    """TFDS-style shard names: mnist-train.tfrecord-00000-of-00004."""
    return SHARD_TEMPLATE.format(DATASET=dataset, SPLIT=split, FILEFORMAT=FILE_FORMAT,
                                 SHARD_X_OF_Y=f"{index:05d}-of-{count:05d}")
