"""Image folders: layouts, bad files, stable splits, parallel writing, and records that all decode."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from tfrexp.config import PipelineConfig
from tfrexp.errors import DataError
from tfrexp.pipeline import build_dataset
from helpers import write_records
from tfrexp import sources
from tfrexp.sources import image_folder
from tfrexp.bench.synthetic import make_catdog_folder

SMALL = ["dataset=catdog", "dataset.image_shape=[32,32,3]"]


def _settings(make_settings, folder, *overrides):
    return make_settings(*SMALL, f"dataset.source.path={folder}", *overrides)


def _write(settings):
    return write_records(settings)


@pytest.mark.parametrize(("layout", "class_names"), [("class_folders", ["Cat", "Dog"]),
                                                     ("filename_label", ["cat", "dog"])])
def test_every_file_is_kept_or_skipped_with_its_reason(tmp_path, make_settings, layout, class_names):
    generated = make_catdog_folder(tmp_path / "images", 15, layout=layout, seed=1, min_size=40, max_size=90)
    record_set = _write(_settings(make_settings, generated.root, "writer.num_workers=1"))
    manifest = record_set.manifest
    kept = sum(info.num_examples for info in manifest.splits.values())
    assert manifest.files_found == generated.files == kept + len(manifest.skipped)
    assert kept == generated.good  # grayscale, CMYK and a PNG named .jpg are converted and kept
    reasons = collections.Counter(item["reason"].split(" (")[0] for item in manifest.skipped)
    assert reasons == {"empty file": 1, "corrupt or truncated image": 1, "not an image": 1,
                       "not an image file": 1}
    assert manifest.class_names == class_names
    assert sorted(manifest.splits) == ["test", "train", "validation"]


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_every_written_record_decodes(tmp_path, make_settings, encoding):
    generated = make_catdog_folder(tmp_path / "images", 15, seed=2, min_size=40, max_size=90)
    record_set = _write(_settings(make_settings, generated.root, f"writer.image_encoding={encoding}",
                                  "writer.num_workers=1"))
    for split, info in record_set.manifest.splits.items():
        dataset = build_dataset(record_set.directory, record_set.manifest, split, PipelineConfig(batch_size=8),
                                training=False)
        images = np.concatenate([batch for batch, _ in dataset.as_numpy_iterator()])
        assert images.shape == (info.num_examples, 32, 32, 3) and images.dtype == np.uint8
        assert images.std() > 5  # real pictures, not blank decodes


def test_one_worker_and_several_write_identical_records(tmp_path, make_settings):
    generated = make_catdog_folder(tmp_path / "images", 20, seed=3, min_size=40, max_size=90)

    def shard_bytes(workers):
        settings = make_settings(*SMALL, f"dataset.source.path={generated.root}", "writer.image_encoding=png",
                                 f"writer.num_workers={workers}", output_dir=tmp_path / f"out{workers}")
        record_set = _write(settings)
        return {path.name: path.read_bytes() for path in record_set.directory.glob("*.tfrecord-*")}

    single, parallel = shard_bytes(1), shard_bytes(2)
    assert single == parallel and len(single) >= 3


def test_splits_are_stable_and_adding_files_moves_none(tmp_path, make_settings):
    generated = make_catdog_folder(tmp_path / "images", 40, seed=4, min_size=40, max_size=60, bad_files=False)
    source = sources.build(_settings(make_settings, generated.root).dataset).settings

    def splits():
        listing = image_folder.list_files(source, None, validation_fraction=0.2)
        return {candidate.relative: candidate.split for candidate in listing.candidates}

    before = splits()
    assert before == splits()
    assert set(before.values()) == {"train", "validation", "test"}
    make_catdog_folder(tmp_path / "more", 10, seed=5, min_size=40, max_size=60, bad_files=False)
    for path in (tmp_path / "more").rglob("*.jpg"):
        target = generated.root / path.parent.name / f"new-{path.name}"
        target.write_bytes(path.read_bytes())
    after = splits()
    assert len(after) == len(before) + 20
    assert {relative: after[relative] for relative in before} == before


def test_split_folders_are_kept_and_missing_splits_carved_from_train(tmp_path, make_settings):
    root = tmp_path / "images"
    make_catdog_folder(root / "train", 30, seed=6, min_size=40, max_size=60, bad_files=False)
    make_catdog_folder(root / "test", 5, seed=7, min_size=40, max_size=60, bad_files=False)
    listing = image_folder.list_files(sources.build(_settings(make_settings, root).dataset).settings, None, 0.2)
    by_split = collections.defaultdict(set)
    for candidate in listing.candidates:
        by_split[candidate.split].add(candidate.relative.split("/")[0])
    assert by_split == {"train": {"train"}, "validation": {"train"}, "test": {"test"}}
    assert listing.class_names == ["Cat", "Dog"]


def test_folders_without_usable_images_are_clear_errors(tmp_path, make_settings):
    empty = tmp_path / "empty"
    (empty / "Cat").mkdir(parents=True)
    (empty / "Cat" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files found"):
        _write(_settings(make_settings, empty))
    generated = make_catdog_folder(tmp_path / "images", 3, seed=8, min_size=40, max_size=60, bad_files=False)
    with pytest.raises(DataError, match=r"no images for class\(es\) \['Bird'\]"):
        _write(_settings(make_settings, generated.root, "dataset.class_names=[Cat,Dog,Bird]"))
    with pytest.raises(DataError, match=r"classes \['Dog'\] are not in dataset.class_names"):
        _write(_settings(make_settings, generated.root, "dataset.class_names=[Cat,Bird]"))
    # a class folder with nothing usable in it is a class without images, not a class that vanishes
    for path in (generated.root / "Dog").iterdir():
        path.unlink()
    (generated.root / "Dog" / "readme.txt").write_text("no dogs yet")
    with pytest.raises(DataError, match=r"no images for class\(es\) \['Dog'\]"):
        _write(_settings(make_settings, generated.root))
