"""Cases 1 and 2: writing MNIST to records, and reading it back for training, against the walkthrough."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import tensorflow as tf

from tfrexp.bench import walkthrough
from tfrexp.bench.measure import Bench, Row, check_epoch, digests, median_seconds, timed_epoch
from tfrexp.config.schema import Cache, PipelineConfig
from tfrexp.pipeline import build_dataset
from tfrexp.records import reader
from tfrexp.records.encoding import PixelEncoder
from tfrexp.records import engines, shards
from tfrexp.records.examples import Examples
from tfrexp.records.writer import ensure_records
from tfrexp.sources.base import encode_array


def bench_writers(bench: Bench) -> list[Row]:
    """The case `writer`: MNIST's arrays, and a folder of photos with each engine."""
    from tfrexp.bench.folder_writer import bench_folder_writer

    return bench_writer(bench) + bench_folder_writer(bench)


def bench_writer(bench: Bench) -> list[Row]:
    settings, source = bench.settings("dataset.validation_fraction=0")
    splits = source.splits()  # train 60k + test 10k, in memory for both writers
    total = sum(len(labels) for _, labels in splits.values())
    megabytes = sum(images.nbytes for images, _ in splits.values()) / 1e6
    encoder = PixelEncoder(settings.writer.image_encoding, settings.writer.jpeg_quality)

    def ours(directory: Path) -> None:
        examples = Examples({split: list(zip(images, labels.tolist())) for split, (images, labels) in splits.items()},
                            functools.partial(encode_array, encoder), source.class_names)
        tasks = shards.plan(source.name, source.image_shape, examples, settings.writer)
        results = engines.run_tasks(tasks, directory, settings.writer, examples.decodes_files, lambda items: None)
        assert sum(result.shard.num_examples for result in results) == total

    def baseline(directory: Path) -> None:
        for split, (images, labels) in splits.items():
            walkthrough.write(directory / f"{split}.tfrecord", images, labels)

    def read_ours(directory: Path, split: str) -> tf.data.Dataset:
        files = sorted(str(path) for path in directory.glob(f"{source.name}-{split}.tfrecord-*"))
        return reader.batch_and_parse(reader.open_shard(files, settings.writer.compression),
                                      settings.writer.image_encoding, source.image_shape, batch_size=512)

    # Untimed, once (also the warm-up): what each writer wrote reads back as every example, pixels and label.
    with tempfile.TemporaryDirectory(dir=bench.work_dir) as directory:
        ours(Path(directory))
        baseline(Path(directory))
        for split, (images, labels) in splits.items():
            expected = digests(images, labels)
            check_epoch(read_ours(Path(directory), split), expected, f"our {split} records")
            check_epoch(walkthrough.pipeline(Path(directory) / f"{split}.tfrecord", 512, 1), expected,
                        f"the walkthrough's {split} records")

    ours_s = median_seconds(lambda: _in_temporary_folder(bench, ours), bench.repeats, warmup=0)
    base_s = median_seconds(lambda: _in_temporary_folder(bench, baseline), bench.repeats, warmup=0)
    return [
        Row("writer: MNIST train+test (70k)", "examples/s", total / ours_s, total / base_s, target=">= 5x",
            note=f"{megabytes / ours_s:.0f} MB/s ours, {megabytes / base_s:.0f} MB/s walkthrough; both read back "
                 "and checked"),
    ]


def _in_temporary_folder(bench: Bench, write) -> None:
    with tempfile.TemporaryDirectory(dir=bench.work_dir) as directory:
        write(Path(directory))


def in_memory_ceiling(images, labels, batch_size: int) -> tf.data.Dataset:
    """The fastest shuffled batches of these arrays tf.data gives here: a permutation of indices, batched,
    each batch gathered in one op, in parallel, prefetched. Every example exactly once per epoch."""
    images, labels = tf.constant(images), tf.constant(labels)
    indices = tf.data.Dataset.range(len(labels)).shuffle(len(labels), reshuffle_each_iteration=True)
    return (indices.batch(batch_size)
            .map(lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .prefetch(tf.data.AUTOTUNE))


def bench_input(bench: Bench) -> list[Row]:
    settings, source = bench.settings("dataset.validation_fraction=0")
    record_set = ensure_records(source, settings.writer, settings.paths.records_dir)
    images, labels = source.splits()["train"]
    count = len(labels)
    expected = digests(images, labels)
    walkthrough_file = bench.work_dir / "walkthrough-mnist-train.tfrecord"
    if not walkthrough_file.is_file():
        walkthrough.write(walkthrough_file, images, labels)

    batch, shuffle = 128, 10_000

    def ours(cache: Cache) -> tf.data.Dataset:
        return build_dataset(record_set.directory, record_set.manifest, "train",
                             PipelineConfig(batch_size=batch, shuffle_buffer=shuffle, cache=cache), training=True)

    pipelines = {
        "ours": ours(Cache.none),
        "ours cached": ours(Cache.memory),
        "walkthrough": walkthrough.pipeline(walkthrough_file, batch, shuffle),
        "in memory": in_memory_ceiling(images, labels, batch),
    }
    rates = {}
    for name, dataset in pipelines.items():
        check_epoch(dataset, expected, name)  # also fills the memory cache before the timed epochs
        rates[name] = count / median_seconds(timed_epoch(dataset, count, name), bench.repeats)
    return [
        Row("input: MNIST train (60k), batches of 128, uncached", "examples/s", rates["ours"],
            rates["walkthrough"], rates["in memory"], ">= 5x; >= 50% of ceiling"),
        Row("input: same, cached in memory", "examples/s", rates["ours cached"], rates["walkthrough"],
            rates["in memory"], ">= 90% of ceiling"),
    ]
