"""Any TensorFlow Datasets builder as a source of (image, label) arrays."""

from __future__ import annotations

import logging

import numpy as np

from tfrexp.config import TfdsSource
from tfrexp.errors import DataError

log = logging.getLogger(__name__)


def _builder(source: TfdsSource):
    import tensorflow_datasets as tfds  # heavy: imported only when this source kind is used

    try:
        return tfds.builder(source.name, data_dir=source.data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DataError(f"dataset.source.name={source.name!r}: not a TensorFlow Datasets name ({error})") from None


def identity(source: TfdsSource) -> dict:
    """TFDS versions name their content: builder name, config and full version, and where it lives."""
    builder = _builder(source)
    return {
        "kind": "tfds",
        "name": builder.name,
        "config": builder.builder_config.name if builder.builder_config else None,
        "version": str(builder.version),
        "data_dir": str(builder.data_dir_root),
        "splits": dict(source.splits),
    }


def load(source: TfdsSource) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import tensorflow_datasets as tfds

    builder = _builder(source)
    if source.download:
        builder.download_and_prepare()
    splits = {}
    for our_split, tfds_split in source.splits.items():
        try:
            dataset = builder.as_dataset(split=tfds_split)
        except (ValueError, KeyError, AssertionError) as error:
            raise DataError(f"{source.name}: cannot read split {tfds_split!r} ({error})") from None
        images, labels = [], []
        for example in tfds.as_numpy(dataset):
            images.append(example[source.image_key])
            labels.append(example[source.label_key])
        if not images:
            raise DataError(f"{source.name}: split {tfds_split!r} is empty")
        splits[our_split] = (np.stack(images).astype(np.uint8), np.asarray(labels, dtype=np.int64))
        log.info("read %d examples of %s:%s", len(images), source.name, tfds_split)
    return splits
