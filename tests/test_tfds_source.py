"""The tfds source kind, offline through tfds.testing.mock_data."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from tfrexp.config import TfdsSource
from tfrexp.records.writer import ensure_records
from tfrexp.sources import tfds_source


def test_mnist_tfds_writes_records_from_the_tfds_builder(make_settings):
    settings = make_settings("dataset=mnist_tfds", "dataset.validation_fraction=0.25")
    assert isinstance(settings.dataset.source, TfdsSource) and settings.dataset.source.name == "mnist"
    with tfds.testing.mock_data(num_examples=40):
        splits = tfds_source.load(settings.dataset.source)
        record_set = ensure_records(settings.dataset, settings.writer, settings.paths.records_dir)
    images, labels = splits["train"]
    assert images.shape == (40, 28, 28, 1) and images.dtype == np.uint8 and labels.dtype == np.int64
    counts = {split: info.num_examples for split, info in record_set.manifest.splits.items()}
    assert counts == {"train": 30, "validation": 10, "test": 40}
    assert record_set.manifest.source["kind"] == "tfds" and record_set.manifest.source["name"] == "mnist"
    assert record_set.directory.parent.name == "mnist_tfds"
