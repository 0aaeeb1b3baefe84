"""Cases 1 and 2: writing MNIST to records, and reading it back for training, against the walkthrough."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import tensorflow as tf

from tfrexp.bench import walkthrough
from tfrexp.bench.measure import (Bench, Row, check_epoch, digests, epoch_seconds, in_memory_ceiling,
                                  interleaved_seconds, rate_row)
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

    seconds = interleaved_seconds({"ours": lambda: _in_temporary_folder(bench, ours),
                                   "walkthrough": lambda: _in_temporary_folder(bench, baseline)},
                                  bench.rounds, warmup=0)  # the checked writes above were the warm-up
    row = rate_row("writer: MNIST train+test (70k)", "examples/s", total, seconds, "ours", "walkthrough",
                   target=">= 5x")
    row.note = (f"{megabytes * row.ours / total:.0f} MB/s ours, {megabytes * row.baseline / total:.0f} MB/s "
                "walkthrough; both read back and checked")
    return [row]


def _in_temporary_folder(bench: Bench, write) -> None:
    with tempfile.TemporaryDirectory(dir=bench.work_dir) as directory:
        write(Path(directory))


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
    for name, dataset in pipelines.items():
        check_epoch(dataset, expected, name)  # also fills the memory cache before the timed epochs
    # Epochs per timing, so that each takes about a second here (an in-memory epoch, and one read from the
    # records since 2026-12-06, take about 0.15 s); a rate is examples per second whatever the passes.
    passes = {"ours": 6, "ours cached": 8, "walkthrough": 1, "in memory": 6}
    seconds = epoch_seconds({name: (dataset, passes[name]) for name, dataset in pipelines.items()}, count,
                            bench.rounds)
    return [
        rate_row("input: MNIST train (60k), batches of 128, uncached", "examples/s", count, seconds, "ours",
                 "walkthrough", "in memory", target=">= 5x; >= 80% of ceiling"),
        rate_row("input: same, cached in memory", "examples/s", count, seconds, "ours cached", "walkthrough",
                 "in memory", target=">= 90% of ceiling"),
    ]
