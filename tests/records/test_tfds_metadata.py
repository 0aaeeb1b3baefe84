"""Every record version is also a TFDS dataset: TensorFlow Datasets alone reads it, with the class names,
and yields the same images and labels as our pipeline, for raw, PNG and JPEG records."""

from __future__ import annotations

import collections
import hashlib

import pytest
import tensorflow_datasets as tfds

from helpers import write_records
from tfrexp.api import load_split
from tfrexp.bench.synthetic import make_catdog_folder


def _digests(pairs) -> collections.Counter:
    return collections.Counter(hashlib.sha1(image.tobytes() + bytes([int(label)])).hexdigest()
                               for image, label in pairs)


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_tfds_reads_every_example_our_pipeline_reads(tmp_path, make_settings, encoding):
    photos = make_catdog_folder(tmp_path / "photos", 12, seed=5, min_size=40, max_size=60, bad_files=False)
    settings = make_settings("dataset=catdog", f"dataset.source.path={photos.root}", "dataset.image_shape=[24,24,3]",
                             f"writer.image_encoding={encoding}", "writer.num_workers=1")
    record_set = write_records(settings)
    builder = tfds.builder_from_directory(str(record_set.directory))
    assert builder.info.features["label"].names == record_set.manifest.class_names == ["Cat", "Dog"]
    for split, info in record_set.manifest.splits.items():
        assert builder.info.splits[split].num_examples == info.num_examples
        theirs = [(example["image"], example["label"])
                  for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))]
        ours = [pair for images, labels in load_split(record_set.directory, split, batch_size=64).as_numpy_iterator()
                for pair in zip(images, labels)]
        assert len(theirs) == info.num_examples and _digests(theirs) == _digests(ours), split


def test_compressed_records_carry_no_tfds_metadata(make_settings):
    record_set = write_records(make_settings("dataset.max_examples_per_split=100", "writer.compression=GZIP"))
    assert not (record_set.directory / "dataset_info.json").exists()
