"""TFDS metadata beside a record version (`dataset_info.json`, `features.json`), written from the manifest,
so that `tfds.builder_from_directory(<version folder>)` reads our records with no tfrexp installed.

Our shards already carry TFDS's names (records/naming.py); the manifest knows
every split's shard lengths and sizes, so no pass over the data is needed. Raw pixels are a fixed-shape
uint8 tensor stored as bytes (exactly our `image` feature); PNG and JPEG are TFDS images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tfrexp.config.schema import Compression, ImageEncoding
from tfrexp.records.manifest import Manifest
from tfrexp.records.naming import SHARD_TEMPLATE

log = logging.getLogger(__name__)


def write_tfds_metadata(directory: Path, manifest: Manifest) -> bool:
    """Write the metadata; False (and nothing written) for compressed records, which TFDS does not read."""
    if manifest.compression is not Compression.none:
        log.info("no TFDS metadata for %s records: TensorFlow Datasets reads uncompressed TFRecords only",
                 manifest.compression.value)
        return False
    import tensorflow_datasets as tfds  # heavy: only when a version is written

    shape = tuple(manifest.image_shape)
    if manifest.image_encoding is ImageEncoding.raw:
        image = tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)
    else:
        image = tfds.features.Image(shape=shape, encoding_format=manifest.image_encoding.value)
    features = tfds.features.FeaturesDict({"image": image,
                                           "label": tfds.features.ClassLabel(names=manifest.class_names)})
    split_infos = [tfds.core.SplitInfo(name=split, shard_lengths=[shard.num_examples for shard in info.shards],
                                       num_bytes=sum(shard.num_bytes for shard in info.shards))
                   for split, info in manifest.splits.items()]
    tfds.folder_dataset.write_metadata(
        data_dir=str(directory), features=features, split_infos=split_infos,
        filename_template=SHARD_TEMPLATE, check_data=False,
        supervised_keys=("image", "label"),
        description=f"{manifest.dataset} written by tfrexp {manifest.tool_version} (fingerprint "
                    f"{manifest.fingerprint}); see manifest.json")
    return True
