"""Any TensorFlow Datasets builder as a source of (image, label) arrays."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
from omegaconf import MISSING

from tfrexp.errors import DataError, first_line
from tfrexp.sources.base import ArraySource, Splits

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """`dataset.source` of kind tfds: a TensorFlow Datasets builder, read as (image, label) pairs."""

    kind: str = "tfds"
    name: str = MISSING  # the TFDS builder name
    data_dir: Optional[str] = None
    download: bool = True
    splits: Dict[str, str] = field(default_factory=lambda: {"train": "train", "test": "test"})  # ours: TFDS's
    image_key: str = "image"
    label_key: str = "label"


class Source(ArraySource):
    settings: Settings

    def _builder(self):
        import tensorflow_datasets as tfds  # heavy: imported only when this source kind is used

        try:
            return tfds.builder(self.settings.name, data_dir=self.settings.data_dir)
        except tfds.core.registered.DatasetNotFoundError as error:
            # TFDS's message goes on to list every data set it has (hundreds of lines): its first line only.
            raise DataError(f"dataset.source.name={self.settings.name!r}: not a TensorFlow Datasets name "
                            f"({first_line(error).rstrip('.')}; `tfds.list_builders()` lists them)") from None

    def content_identity(self) -> dict:
        """TFDS versions name their content: builder name, config and full version, and where it lives."""
        builder = self._builder()
        return {
            "kind": "tfds",
            "name": builder.name,
            "config": builder.builder_config.name if builder.builder_config else None,
            "version": str(builder.version),
            "data_dir": str(builder.data_dir_root),
            "splits": dict(self.settings.splits),
            "image_key": self.settings.image_key,
            "label_key": self.settings.label_key,
        }

    def load_arrays(self) -> Splits:
        import tensorflow_datasets as tfds

        source = self.settings
        builder = self._builder()
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
