"""Records on the paths beside the golden one: slices of image folders, what enters the fingerprint,
reuse while a version is being replaced, shards that went missing, and images that do not decode."""

from __future__ import annotations

import collections

import pytest
import tensorflow as tf

from helpers import write_records
from tfrexp import sources
from tfrexp.errors import RecordsError
from tfrexp.records import writer as records_writer
from tfrexp.records.schema import ExampleEncoder
from tfrexp.records.writer import version_fingerprint
from tfrexp.bench.synthetic import make_catdog_folder

SMALL = ["dataset=catdog", "dataset.image_shape=[32,32,3]", "writer.num_workers=1"]


def test_a_slice_of_an_image_folder_keeps_the_classes_and_counts_what_it_left_out(tmp_path, make_settings):
    generated = make_catdog_folder(tmp_path / "images", 40, seed=1, min_size=40, max_size=60, bad_files=False)
    settings = make_settings(*SMALL, f"dataset.source.path={generated.root}", "dataset.max_examples_per_split=10")
    record_set = write_records(settings)
    manifest = record_set.manifest
    assert {split: info.num_examples for split, info in manifest.splits.items()}["train"] == 10
    kept = sum(info.num_examples for info in manifest.splits.values())
    left_out = [item for item in manifest.skipped if "max_examples_per_split" in item["reason"]]
    assert kept + len(manifest.skipped) == manifest.files_found == generated.files
    assert len(left_out) == generated.files - kept
    labels = collections.Counter()
    for images, batch_labels in tfrexp_train(record_set):
        labels.update(batch_labels.numpy().tolist())
    assert labels == {0: 5, 1: 5}, "the slice keeps both classes in their proportions"
    again = write_records(make_settings(*SMALL, f"dataset.source.path={generated.root}",
                                        "dataset.max_examples_per_split=10", "writer.force=true"))
    assert again.manifest.skipped == manifest.skipped, "the same files on every run"


def tfrexp_train(record_set):
    from tfrexp.api import load_split

    return load_split(record_set.directory, "train", batch_size=64)


def test_split_seed_is_no_part_of_an_image_folders_identity_but_tfds_keys_are(tmp_path, make_settings):
    generated = make_catdog_folder(tmp_path / "images", 5, seed=2, min_size=40, max_size=60, bad_files=False)

    def fingerprint(*overrides):
        settings = make_settings(*SMALL, f"dataset.source.path={generated.root}", *overrides)
        return version_fingerprint(sources.build(settings.dataset), settings.writer)[0]

    assert fingerprint("dataset.split_seed=0") == fingerprint("dataset.split_seed=7"), "image folders split by hash"
    tfds_default = sources.build(make_settings("dataset=mnist_tfds").dataset).content_identity
    tfds_other = sources.build(make_settings("dataset=mnist_tfds", "dataset.source.image_key=picture").dataset)
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4):
        assert tfds_default() != tfds_other.content_identity()


def test_records_hold_no_feature_that_nothing_reads(make_settings):
    record_set = write_records(make_settings("dataset.max_examples_per_split=50"))
    shard = record_set.manifest.shard_paths(record_set.directory, "train")[0]
    example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(str(shard)))).numpy())
    assert set(example.features.feature) == {"image", "label"}
    assert set(record_set.manifest.schema.to_json()["features"]) == {"image", "label"}


def test_reuse_while_force_replaces_the_version_finds_a_whole_version(make_settings, monkeypatch):
    settings = make_settings("dataset.max_examples_per_split=200")
    first = write_records(settings)
    real_read = records_writer.read_manifest
    calls = []

    def replaced_meanwhile(directory):
        if not calls:  # a force writer retires the version between the reader's look and its read
            calls.append(directory)
            directory.rename(directory.with_name(f".old-{directory.name}-1"))
        return real_read(directory)

    monkeypatch.setattr(records_writer, "read_manifest", replaced_meanwhile)
    again = write_records(settings)
    assert calls and again.directory == first.directory and (again.directory / "manifest.json").is_file()


def test_a_deleted_shard_is_a_records_error_on_reuse(make_settings):
    settings = make_settings("dataset.max_examples_per_split=1500", "writer.shard_size_mb=0.4")
    record_set = write_records(settings)
    shard = record_set.manifest.shard_paths(record_set.directory, "train")[1]
    shard.unlink()
    with pytest.raises(RecordsError, match=f"{shard.name}: missing.*writer.force=true"):
        write_records(settings)
    shard.with_name("x").write_bytes(b"")
    other = record_set.manifest.shard_paths(record_set.directory, "train")[0]
    other.write_bytes(other.read_bytes()[:-10])
    with pytest.raises(RecordsError, match=f"{other.name}: .* bytes, the manifest says"):
        write_records(settings)


def test_an_image_that_does_not_decode_fails_training_naming_its_shard(tmp_path, make_settings):
    import tfrexp

    generated = make_catdog_folder(tmp_path / "images", 12, seed=3, min_size=40, max_size=60, bad_files=False)
    overrides = [*SMALL, f"dataset.source.path={generated.root}", "writer.image_encoding=png",
                 f"paths.output_dir={tmp_path / 'outputs'}", "model=mlp", "trainer.verbose=0",
                 "tracking.log_model=false"]
    settings = make_settings(*overrides)
    record_set = write_records(settings)
    shard = record_set.manifest.shard_paths(record_set.directory, "train")[0]
    examples = [tf.train.Example.FromString(record.numpy()) for record in tf.data.TFRecordDataset(str(shard))]
    encoder = ExampleEncoder()
    with tf.io.TFRecordWriter(str(shard)) as out:  # valid records (CRCs right, same size), one not a PNG
        for index, example in enumerate(examples):
            image = example.features.feature["image"].bytes_list.value[0]
            label = example.features.feature["label"].int64_list.value[0]
            out.write(encoder.encode(b"x" * len(image) if index == 0 else image, label))
    with pytest.raises(RecordsError, match=f"corrupt records: .*{shard.name}: unreadable"):
        tfrexp.run(overrides)
