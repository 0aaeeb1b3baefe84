"""The tfds source kind, offline through tfds.testing.mock_data."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from tfrexp import sources
from helpers import write_records


def test_mnist_tfds_writes_records_from_the_tfds_builder(make_settings):
    settings = make_settings("dataset=mnist_tfds", "dataset.validation_fraction=0.25")
    source = sources.build(settings.dataset)
    assert isinstance(source, sources.tfds.Source) and source.settings.name == "mnist"
    with tfds.testing.mock_data(num_examples=40):
        splits = source.load_arrays()
        record_set = write_records(settings)
    images, labels = splits["train"]
    assert images.shape == (40, 28, 28, 1) and images.dtype == np.uint8 and labels.dtype == np.int64
    counts = {split: info.num_examples for split, info in record_set.manifest.splits.items()}
    assert counts == {"train": 30, "validation": 10, "test": 40}
    identity = record_set.manifest.source["source"]
    assert identity["kind"] == "tfds" and identity["name"] == "mnist"
    assert record_set.directory.parent.name == "mnist_tfds"


def test_a_dataset_without_a_train_split_is_a_data_error(tmp_path, data_dir):
    import pytest

    import tfrexp
    from tfrexp.errors import DataError

    with tfds.testing.mock_data(num_examples=8), pytest.raises(DataError, match="no 'train' split"):
        tfrexp.run(["dataset=mnist_tfds", "~dataset.source.splits.train", "trainer.verbose=0",
                    "tracking.log_model=false", f"paths.output_dir={tmp_path}"])


def test_a_name_tensorflow_datasets_lacks_is_one_line(make_settings):
    """TFDS's error lists every data set it has: the message was 459 lines."""
    import pytest

    from tfrexp.errors import DataError

    source = sources.build(make_settings("dataset=mnist_tfds", "dataset.source.name=my_set").dataset)
    with pytest.raises(DataError) as refused:
        source.content_identity()
    assert str(refused.value) == ("dataset.source.name='my_set': not a TensorFlow Datasets name (Dataset my_set not "
                                  "found; `tfds.list_builders()` lists them)")
