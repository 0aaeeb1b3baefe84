"""What every source kind shares: the dataset settings and their part of the identity; and, for kinds
that load whole splits as arrays (idx, tfds), the slicing, the checks and the validation split."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from tfrexp.config.schema import DatasetConfig
from tfrexp.errors import ConfigError, DataError
from tfrexp.records.encoding import PixelEncoder
from tfrexp.records.examples import Example, Examples

Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 images [N, H, W, C], int64 labels [N])


class DatasetSource:
    """A source kind's common part; subclasses add `content_identity` and `examples`."""

    uses_split_seed = True  # False: dataset.split_seed changes nothing, so it is no part of the identity

    def __init__(self, dataset: DatasetConfig, settings: Any) -> None:
        self.dataset = dataset
        self.settings = settings
        self.name = dataset.name
        self.image_shape = list(dataset.image_shape)

    def identity(self) -> dict:
        dataset = self.dataset
        settings = {
            "name": dataset.name,
            "image_shape": list(dataset.image_shape),
            "class_names": list(dataset.class_names) if dataset.class_names is not None else None,
            "validation_fraction": dataset.validation_fraction,
            "max_examples_per_split": dataset.max_examples_per_split,
        }
        if self.uses_split_seed:
            settings["split_seed"] = dataset.split_seed
        return {"dataset": settings, "source": self.content_identity()}

    def content_identity(self) -> dict:
        """What names the source's content and settings, from metadata only (no data is read)."""
        raise NotImplementedError


class ArraySource(DatasetSource):
    """Kinds that load each split into memory as arrays; subclasses implement `load_arrays`."""

    def __init__(self, dataset: DatasetConfig, settings: Any) -> None:
        super().__init__(dataset, settings)
        if dataset.class_names is None:
            raise ConfigError(f"dataset.class_names=None: is required for a {settings.kind} source")
        self.class_names = list(dataset.class_names)

    def load_arrays(self) -> Splits:
        raise NotImplementedError

    def splits(self) -> Splits:
        """The splits cut to max_examples_per_split and checked, with validation carved from train."""
        splits = self.load_arrays()
        limit = self.dataset.max_examples_per_split
        if limit is not None:
            splits = {name: (images[:limit], labels[:limit]) for name, (images, labels) in splits.items()}
        for name, (images, labels) in splits.items():
            self._check(name, images, labels)
        if self.dataset.validation_fraction > 0:
            splits = carve_validation(splits, self.dataset.validation_fraction, self.dataset.split_seed)
        return splits

    def examples(self, encoder: PixelEncoder) -> Examples:
        return Examples(
            splits={name: list(zip(images, labels.tolist())) for name, (images, labels) in self.splits().items()},
            prepare=functools.partial(encode_array, encoder),
            class_names=self.class_names,
        )

    def _check(self, name: str, images: np.ndarray, labels: np.ndarray) -> None:
        if list(images.shape[1:]) != self.image_shape:
            raise DataError(f"split {name!r}: images have shape {list(images.shape[1:])}, "
                            f"dataset.image_shape is {self.image_shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise DataError(f"split {name!r}: labels range over [{labels.min()}, {labels.max()}], "
                            f"but dataset.class_names has {len(self.class_names)} classes")


def carve_validation(splits: Splits, fraction: float, seed: int) -> Splits:
    """Move a seeded random `fraction` of train into a `validation` split; both keep source order."""
    if "train" not in splits or "validation" in splits:
        return splits
    images, labels = splits["train"]
    count = int(round(len(labels) * fraction))
    if count == 0 or count == len(labels):
        raise DataError(f"validation_fraction={fraction} leaves an empty split of {len(labels)} train examples")
    in_validation = np.zeros(len(labels), dtype=bool)
    in_validation[np.random.default_rng(seed).permutation(len(labels))[:count]] = True
    carved = dict(splits)
    carved["train"] = (images[~in_validation], labels[~in_validation])
    carved["validation"] = (images[in_validation], labels[in_validation])
    return carved


def encode_array(encoder: PixelEncoder, item: tuple[np.ndarray, int]) -> Example:
    """An in-memory image and its label as the writer's example."""
    image, label = item
    return encoder(image), label
