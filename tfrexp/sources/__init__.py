"""Source data sets: one module per source kind, and the split handling they share.

Each kind's module offers `identity(source) -> dict` (cheap: never reads the data, it feeds the records
fingerprint) and `load(source) -> {split: (images, labels)}`.
"""

from __future__ import annotations

import numpy as np

from tfrexp.config import DatasetConfig
from tfrexp.errors import DataError
from tfrexp.sources import idx, tfds_source

_KINDS = {"idx": idx, "tfds": tfds_source}

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def identity(dataset: DatasetConfig) -> dict:
    return _KINDS[dataset.source.kind].identity(dataset.source)


def load_splits(dataset: DatasetConfig) -> Splits:
    """The source's splits, cut to max_examples_per_split, with validation carved from train."""
    splits = _KINDS[dataset.source.kind].load(dataset.source)
    if dataset.max_examples_per_split is not None:
        splits = {name: (x[: dataset.max_examples_per_split], y[: dataset.max_examples_per_split])
                  for name, (x, y) in splits.items()}
    for name, (images, labels) in splits.items():
        _check_split(dataset, name, images, labels)
    if dataset.validation_fraction > 0:
        splits = carve_validation(splits, dataset.validation_fraction, dataset.split_seed)
    return splits


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


def _check_split(dataset: DatasetConfig, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    if tuple(images.shape[1:]) != tuple(dataset.image_shape):
        raise DataError(
            f"split {name!r}: images have shape {list(images.shape[1:])}, "
            f"dataset.image_shape is {list(dataset.image_shape)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= dataset.num_classes):
        raise DataError(
            f"split {name!r}: labels range over [{labels.min()}, {labels.max()}], "
            f"but dataset.class_names has {dataset.num_classes} classes"
        )
