"""Case 3: cats vs dogs, a folder of JPEG files read the obvious way, against our records in each encoding."""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from tfrexp.bench.measure import Bench, Row, check_epoch, digests, median_seconds, timed_epoch
from tfrexp.config.schema import Cache, ImageEncoding, PipelineConfig, WriterConfig
from tfrexp.pipeline import build_dataset
from tfrexp.records import reader
from tfrexp.records.encoding import PixelEncoder
from tfrexp.records.examples import ExampleSource, Skipped
from tfrexp.records.writer import RecordSet, ensure_records
from tfrexp.bench.synthetic import make_catdog_folder


def bench_catdog(bench: Bench) -> list[Row]:
    folder = bench.work_dir / f"catdog-synthetic-{bench.catdog_images}"
    if not (folder / ".complete").is_file():
        make_catdog_folder(folder, bench.catdog_images // 2, seed=0, bad_files=False)
        (folder / ".complete").touch()
    files = sorted(path for path in folder.rglob("*.jpg"))
    class_names = sorted({path.parent.name for path in files})
    file_labels = [class_names.index(path.parent.name) for path in files]
    count, batch = len(files), 32
    label_counts = collections.Counter(file_labels)

    def jpeg_folder() -> tf.data.Dataset:
        def load(path, label):
            image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            return tf.image.resize(image, [150, 150]), label

        dataset = tf.data.Dataset.from_tensor_slices(([str(p) for p in files], file_labels)).shuffle(count)
        return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE)

    def labels_check(dataset: tf.data.Dataset, name: str) -> None:
        seen = collections.Counter()
        for images, labels in dataset.as_numpy_iterator():
            if images.shape[1:] != (150, 150, 3) or images.dtype != np.float32:
                raise RuntimeError(f"{name}: batches of {images.shape[1:]} {images.dtype}, not 150x150x3 float32")
            seen.update(labels.tolist())
        if seen != label_counts:
            raise RuntimeError(f"{name}: labels {dict(seen)} differ from the folder's {dict(label_counts)}")

    baseline = jpeg_folder()
    labels_check(baseline, "JPEG folder")
    baseline_rate = count / median_seconds(timed_epoch(baseline, count, "JPEG folder"), bench.repeats)
    rows = []
    for encoding in ("raw", "png", "jpeg"):
        settings, source = bench.settings(
            "dataset=catdog", f"dataset.source.path={folder}", "dataset.validation_fraction=0",
            "dataset.source.test_fraction=0", f"dataset.class_names=[{','.join(class_names)}]",
            f"writer.image_encoding={encoding}")
        record_set = ensure_records(source, settings.writer, settings.paths.records_dir)
        # Shards in a new order each epoch and a buffer of 1,000 records (67 MB raw) mix the examples; the
        # folder pipeline shuffles file names, which costs nothing. No cache: this compares reading paths.
        ours = build_dataset(record_set.directory, record_set.manifest, "train",
                             PipelineConfig(batch_size=batch, shuffle_buffer=1000, cache=Cache.none), training=True)
        check_epoch(ours, expected_digests(source, settings.writer), f"records ({encoding})")
        ours = ours.map(lambda images, labels: (tf.cast(images, tf.float32), labels))  # same tensors as the baseline
        rate = count / median_seconds(timed_epoch(ours, count, encoding), bench.repeats)
        size = sum(shard.num_bytes for info in record_set.manifest.splits.values() for shard in info.shards) / 1e6
        rows.append(Row(f"catdog: {count} photos -> 150x150x3, records ({encoding}) vs JPEG folder", "images/s",
                        rate, baseline_rate, target=">= 3x",
                        note=f"records {size:.0f} MB; read+decode {decode_microseconds(record_set):.0f} us/image "
                             "on one core; pixels checked"))
    return rows


def expected_digests(source: ExampleSource, writer: WriterConfig) -> collections.Counter:
    """Pixel-and-label digests of what the source hands the writer, each encoded image decoded on its own
    (outside records and pipeline): raw and PNG are the resized pixels exactly, JPEG what its bytes decode to."""
    images, labels = [], []
    examples = source.examples(PixelEncoder(writer.image_encoding, writer.jpeg_quality))
    for items in examples.splits.values():
        for item in map(examples.prepare, items):
            if isinstance(item, Skipped):
                continue
            encoded, label = item
            if writer.image_encoding is ImageEncoding.raw:
                images.append(np.frombuffer(encoded, np.uint8).reshape(source.image_shape))
            else:
                images.append(tf.io.decode_image(encoded, channels=source.image_shape[-1]).numpy())
            labels.append(label)
    return digests(np.stack(images), np.asarray(labels))


def decode_microseconds(record_set: RecordSet, images: int = 500) -> float:
    """The profile behind a catdog row: reading and decoding one record at a time, on one core."""
    manifest = record_set.manifest
    files = [str(path) for path in manifest.shard_paths(record_set.directory, "train")]
    records = reader.open_shard(files, manifest.compression).take(images)
    decoded = reader.batch_and_parse(records, manifest.image_encoding, manifest.image_shape, batch_size=1,
                                     parallel=1)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    decoded = decoded.with_options(options)
    count = min(images, manifest.splits["train"].num_examples)
    return median_seconds(lambda: sum(1 for _ in decoded), 3) / count * 1e6
