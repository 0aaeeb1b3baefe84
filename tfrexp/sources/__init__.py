"""Source data sets: one module per source kind, and what the writer consumes from any of them.

Each kind offers `identity(...)`: cheap, never reads the data, it feeds the records fingerprint. Array
kinds (idx, tfds) `load` whole splits into memory; image folders list files that worker processes
decode. `prepare` turns either into ordered streams of encoded examples and skipped files.
"""

from __future__ import annotations

import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Union

import numpy as np

from tfrexp.config import DatasetConfig, ImageFolderSource
from tfrexp.errors import DataError
from tfrexp.records.encoding import ImageEncoding, encode_pixels
from tfrexp.sources import idx, image_folder, tfds_source
from tfrexp.sources.image_folder import Skipped

_ARRAY_KINDS = {"idx": idx, "tfds": tfds_source}

Splits = dict[str, tuple[np.ndarray, np.ndarray]]
Prepared = Union[tuple[bytes, int], Skipped]  # (encoded image, label) or a file left out, with why


@dataclass
class PreparedSplit:
    count: int  # items in the stream: examples plus skipped files
    stream: Iterator[Prepared]  # in a fixed order, whatever the number of workers


@dataclass
class PreparedDataset:
    splits: dict[str, PreparedSplit]
    class_names: list[str]
    skipped: list[Skipped] = field(default_factory=list)  # found but never read (not images, unlabelled)
    files_found: int | None = None  # image folders: every file under the folder


def identity(dataset: DatasetConfig) -> dict:
    if isinstance(dataset.source, ImageFolderSource):
        return image_folder.identity(dataset.source)
    return _ARRAY_KINDS[dataset.source.kind].identity(dataset.source)


def load_splits(dataset: DatasetConfig) -> Splits:
    """An array source's splits, cut to max_examples_per_split, with validation carved from train."""
    splits = _ARRAY_KINDS[dataset.source.kind].load(dataset.source)
    if dataset.max_examples_per_split is not None:
        splits = {name: (x[: dataset.max_examples_per_split], y[: dataset.max_examples_per_split])
                  for name, (x, y) in splits.items()}
    for name, (images, labels) in splits.items():
        _check_split(dataset, name, images, labels)
    if dataset.validation_fraction > 0:
        splits = carve_validation(splits, dataset.validation_fraction, dataset.split_seed)
    return splits


@contextmanager
def prepare(
    dataset: DatasetConfig, encoding: ImageEncoding, jpeg_quality: int, workers: int
) -> Iterator[PreparedDataset]:
    """Every split as a stream of encoded examples; image files are decoded by `workers` processes."""
    if not isinstance(dataset.source, ImageFolderSource):
        splits = load_splits(dataset)
        yield PreparedDataset(
            splits={name: PreparedSplit(len(labels), encode_arrays(images, labels, encoding, jpeg_quality))
                    for name, (images, labels) in splits.items()},
            class_names=list(dataset.class_names),
        )
        return
    listing = image_folder.list_files(dataset.source, dataset.class_names, dataset.validation_fraction)
    by_split: dict[str, list] = {}
    for candidate in listing.candidates:
        by_split.setdefault(candidate.split, []).append(candidate)
    if dataset.max_examples_per_split is not None:
        by_split = {name: items[: dataset.max_examples_per_split] for name, items in by_split.items()}
    task = functools.partial(image_folder.prepare_file, dataset.source.path, image_shape=tuple(dataset.image_shape),
                             resize=dataset.source.resize, encoding=encoding, jpeg_quality=jpeg_quality)
    # spawn, not fork: the parent has TensorFlow's threads running, which a forked child must not inherit.
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None)
    try:
        def stream(items: list) -> Iterator[Prepared]:
            return pool.map(task, items, chunksize=16) if pool else map(task, items)

        yield PreparedDataset(
            splits={name: PreparedSplit(len(items), stream(items)) for name, items in sorted(by_split.items())},
            class_names=listing.class_names,
            skipped=listing.skipped,
            files_found=listing.files_found,
        )
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


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


def encode_arrays(images: np.ndarray, labels: np.ndarray, encoding: ImageEncoding, quality: int) -> Iterator[Prepared]:
    """In-memory images as the writer's stream of (encoded image, label)."""
    for image, label in zip(images, labels):
        yield encode_pixels(image, encoding, quality), int(label)


def _check_split(dataset: DatasetConfig, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    if tuple(images.shape[1:]) != tuple(dataset.image_shape):
        raise DataError(
            f"split {name!r}: images have shape {list(images.shape[1:])}, "
            f"dataset.image_shape is {list(dataset.image_shape)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(dataset.class_names)):
        raise DataError(
            f"split {name!r}: labels range over [{labels.min()}, {labels.max()}], "
            f"but dataset.class_names has {len(dataset.class_names)} classes"
        )
