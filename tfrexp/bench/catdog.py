"""Case 3: cats vs dogs, a folder of JPEG files read the obvious way, against our records in each encoding."""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from tfrexp.bench.measure import (Bench, Row, check_epoch, digests, epoch_seconds, in_memory_ceiling,
                                  median_seconds, rate_row)
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
    # Epochs per timing, so that each takes about a second here (the in-memory epoch of 2,000 images takes
    # under 0.1 s); a rate is images per second whatever the passes.
    images_per_timing = {"JPEG folder": 2000, "png": 2000, "jpeg": 6000, "raw": 8000, "in memory": 20000}
    passes = {name: max(1, images // count) for name, images in images_per_timing.items()}
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
    epochs = {"JPEG folder": (baseline, passes["JPEG folder"])}
    notes, raw_arrays = {}, None
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
        expected = expected_digests(source, settings.writer)
        check_epoch(ours, expected, f"records ({encoding})")
        if encoding == "raw":
            raw_arrays = _arrays(ours)
            not_parsed = read_not_parsed(record_set, batch)
            # Checked as the others are (parsed here, outside the timing): every record once, the right pixels.
            check_epoch(reader.parse_batches(not_parsed, record_set.manifest.image_shape), expected,
                        "raw records, not parsed")
            epochs["raw, not parsed"] = (not_parsed, passes["raw"])
        # Cast: the same tensors as the baseline's.
        epochs[encoding] = (ours.map(lambda images, labels: (tf.cast(images, tf.float32), labels)), passes[encoding])
        size = sum(shard.num_bytes for info in record_set.manifest.splits.values() for shard in info.shards) / 1e6
        notes[encoding] = (f"records {size:.0f} MB; read+decode {decode_microseconds(record_set):.0f} us/image on "
                           "one core; pixels checked")
    # The ceiling: the same pixels and labels already in memory, shuffled and cast in the same batches.
    ceiling = in_memory_ceiling(*raw_arrays, batch).map(lambda images, labels: (tf.cast(images, tf.float32), labels))
    epochs["in memory"] = (ceiling, passes["in memory"])
    seconds = epoch_seconds(epochs, count, bench.rounds)
    targets = {"raw": ">= 5x; >= 75% of ceiling", "png": ">= 1x or its cost stated", "jpeg": ">= 1x or its cost stated"}
    rows = [rate_row(f"catdog: {count} photos -> 150x150x3, records ({encoding}) vs JPEG folder", "images/s",
                     count, seconds, encoding, "JPEG folder", "in memory", target=targets[encoding],
                     note=notes[encoding])
            for encoding in ("raw", "png", "jpeg")]
    return [*rows, rate_row(f"catdog: {count} photos, raw records read but not parsed", "images/s", count, seconds,
                            "raw, not parsed", ceiling="in memory",
                            note="the shards read in parallel, nothing shuffled, parsed or cast: what reading "
                                 "this record format costs before anything else is done")]


def read_not_parsed(record_set: RecordSet, batch: int) -> tf.data.Dataset:
    """The raw records' serialized bytes, not parsed: every shard read by a reader of its own, in parallel,
    `batch` records a batch (each shard's last batch shorter), the batches interleaved. The fastest plain read
    of these records found (docs/benchmarks.md#raw-records-read-but-not-parsed)."""
    manifest = record_set.manifest
    files = [str(path) for path in manifest.shard_paths(record_set.directory, "train")]
    shards = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), reshuffle_each_iteration=True)
    read = reader.plain(lambda path: reader.open_shard(path, manifest.compression).batch(batch))
    return shards.interleave(read, cycle_length=len(files), num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=False).prefetch(tf.data.AUTOTUNE)


def _arrays(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*dataset.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


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
