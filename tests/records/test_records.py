"""Writing, reading back, fingerprinting and reusing record versions, on real MNIST slices."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfrexp import sources
from tfrexp.sources import idx
from tfrexp.records.manifest import read_manifest
from tfrexp.records import reader
from tfrexp.records.naming import shard_name
from helpers import write_records

SLICE = "dataset.max_examples_per_split=1500"
SMALL_SHARDS = "writer.shard_size_mb=0.4"  # ~490 MNIST records per shard, so splits have several shards


def _read_in_write_order(record_set, split):
    """Shard after shard, record after record, through the schema's own parser."""
    images, labels = [], []
    for path in record_set.manifest.shard_paths(record_set.directory, split):
        for batch in reader.open_shard(str(path), record_set.manifest.compression).batch(500):
            batch_images, batch_labels = reader.parse_batch(batch, record_set.manifest.image_shape)
            images.append(batch_images.numpy())
            labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


@pytest.mark.parametrize("compression", ["none", "GZIP", "ZLIB"])
def test_round_trip_returns_identical_pixels_and_labels(make_settings, compression):
    settings = make_settings(SLICE, SMALL_SHARDS, f"writer.compression={compression}")
    record_set = write_records(settings)
    expected = sources.build(settings.dataset).splits()
    assert sorted(record_set.manifest.splits) == ["test", "train", "validation"]
    for split, (images, labels) in expected.items():
        read_images, read_labels = _read_in_write_order(record_set, split)
        assert read_images.dtype == np.uint8 and read_labels.dtype == np.int64
        np.testing.assert_array_equal(read_images, images)
        np.testing.assert_array_equal(read_labels, labels)


def test_shards_have_tfds_names_and_the_manifest_counts_what_is_on_disk(make_settings):
    settings = make_settings(SLICE, SMALL_SHARDS)
    record_set = write_records(settings)
    manifest = read_manifest(record_set.directory)
    assert manifest.splits["train"].num_examples == 1350 and manifest.splits["validation"].num_examples == 150
    train_shards = manifest.splits["train"].shards
    assert [shard.file for shard in train_shards] == [shard_name("mnist", "train", i, 3) for i in range(3)]
    assert train_shards[0].file == "mnist-train.tfrecord-00000-of-00003"
    for split, info in manifest.splits.items():
        assert sum(shard.num_examples for shard in info.shards) == info.num_examples
        for shard in info.shards:
            path = record_set.directory / shard.file
            assert os.path.getsize(path) == shard.num_bytes
            assert sum(1 for _ in tf.data.TFRecordDataset(str(path))) == shard.num_examples
    on_disk = sorted(path.name for path in record_set.directory.iterdir())
    listed = sorted(shard.file for info in manifest.splits.values() for shard in info.shards)
    tfds_metadata = ["dataset_info.json", "features.json", "label.labels.txt"]  # the label's class names
    assert on_disk == sorted([*listed, "manifest.json", *tfds_metadata])
    raw = json.loads((record_set.directory / "manifest.json").read_text())
    assert raw["fingerprint"] == record_set.directory.name
    assert raw["schema"]["image_shape"] == [28, 28, 1] and raw["tool_version"] and raw["created_at"]
    assert raw["writer"] == {"shard_size_mb": 0.4, "compression": "none", "image_encoding": "raw", "jpeg_quality": 90}


def _fingerprint(make_settings, *overrides, output_dir=None):
    settings = make_settings(SLICE, *overrides, output_dir=output_dir)
    return write_records(settings).manifest.fingerprint


def test_fingerprint_changes_when_and_only_when_source_or_settings_change(make_settings, tmp_path, data_dir):
    base = _fingerprint(make_settings)
    # Same inputs: same fingerprint, also elsewhere and with force or pipeline/trainer changes.
    assert _fingerprint(make_settings, output_dir=tmp_path / "elsewhere") == base
    assert _fingerprint(make_settings, "writer.force=true", "writer.num_workers=3", "pipeline.batch_size=7",
                        "trainer.epochs=5") == base
    # Anything that changes the bytes: a new fingerprint.
    changed = {
        _fingerprint(make_settings, "writer.shard_size_mb=1"),
        _fingerprint(make_settings, "writer.compression=GZIP"),
        _fingerprint(make_settings, "dataset.max_examples_per_split=1000"),
        _fingerprint(make_settings, "dataset.validation_fraction=0.2"),
        _fingerprint(make_settings, "dataset.split_seed=1"),
        _fingerprint(make_settings, "writer.image_encoding=png"),
    }
    assert base not in changed and len(changed) == 6
    # The source's content: a copy of the files with other metadata is another source.
    copy = tmp_path / "copy"
    (copy / "mnist").mkdir(parents=True)
    for path in (data_dir / "mnist").glob("*.gz"):
        (copy / "mnist" / path.name).write_bytes(path.read_bytes())
    assert _fingerprint(make_settings, f"paths.data_dir={copy}") != base


def test_same_fingerprint_is_reused_without_reading_the_source(make_settings, monkeypatch):
    settings = make_settings(SLICE)
    first = write_records(settings)
    assert not first.reused

    def must_not_load(self):
        raise AssertionError("the source was read although the records could be reused")

    monkeypatch.setattr(idx.Source, "load_arrays", must_not_load)
    second = write_records(settings)
    assert second.reused and second.directory == first.directory
    assert second.manifest == first.manifest


def test_force_rewrites_and_leftovers_of_a_killed_writer_are_removed(make_settings):
    settings = make_settings(SLICE)
    first = write_records(settings)
    root = first.directory.parent
    orphan = root / f".tmp-{first.manifest.fingerprint}-999999"
    orphan.mkdir()
    (orphan / "mnist-train.tfrecord-00000-of-00001").write_bytes(b"half")
    forced = make_settings(SLICE, "writer.force=true")
    second = write_records(forced)
    assert not second.reused and second.directory == first.directory
    assert second.manifest.created_at >= first.manifest.created_at
    assert sorted(path.name for path in root.iterdir() if not path.name.endswith(".lock")) == [first.directory.name]
