"""Case `writer`, its photo part: a cats-vs-dogs folder written to records as shard tasks, with writer.engine=local
and with writer.engine=ray on a Ray head started here (127.0.0.1), each with 1 and 2 workers, against the
ceiling of one core decoding and resizing the same photos in this process (no records, no processes)."""

from __future__ import annotations

import functools
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from tfrexp.bench.local_ray import RAY_ON_LOOPBACK, ray_head
from tfrexp.bench.measure import Bench, Row, interleaved_seconds, rate_row
from tfrexp.bench.synthetic import make_catdog_folder
from tfrexp.records.encoding import PixelEncoder
from tfrexp.records.writer import ensure_records

CEILING_SAMPLE = 500  # photos decoded and resized on one core for the ceiling
WORKERS = (1, 2)


def bench_folder_writer(bench: Bench) -> list[Row]:
    folder = bench.work_dir / f"catdog-synthetic-{bench.writer_photos}"
    if not (folder / ".complete").is_file():
        make_catdog_folder(folder, bench.writer_photos // 2, seed=0, bad_files=False)
        (folder / ".complete").touch()
    records_dir = bench.work_dir / "writer-records"
    overrides = ["dataset=catdog", f"dataset.source.path={folder}", "dataset.validation_fraction=0",
                 "dataset.source.test_fraction=0", "dataset.class_names=[Cat,Dog]", "writer.force=true"]
    prepare_sample, sample_size = _one_core_work(bench, overrides)
    prepare_sample()  # the ceiling's warm-up; each write is a fresh one and needs none

    def write(*engine: str) -> None:
        settings, source = bench.settings(*overrides, *engine)
        record_set = ensure_records(source, settings.writer, records_dir)
        written = sum(info.num_examples for info in record_set.manifest.splits.values())
        if written != bench.writer_photos:
            raise RuntimeError(f"the writer kept {written} of {bench.writer_photos} photos")

    # The one-core ceiling is timed in the same rounds as the writes it is compared with.
    local = interleaved_seconds(
        {"one core": prepare_sample,
         **{f"local {workers}": functools.partial(write, "writer.engine=local", f"writer.num_workers={workers}")
            for workers in WORKERS}}, bench.rounds, warmup=0)
    # Each engine and worker count: its writes' seconds, and the one-core work's seconds in the same rounds.
    seconds = {f"local {workers}": (local[f"local {workers}"], local["one core"]) for workers in WORKERS}
    for workers in WORKERS:
        with _ray_cluster(bench.work_dir, workers):
            on_ray = interleaved_seconds({"one core": prepare_sample, "ray": lambda: write("writer.engine=ray")},
                                         bench.rounds, warmup=0)
        seconds[f"ray {workers}"] = on_ray["ray"], on_ray["one core"]
    shutil.rmtree(records_dir, ignore_errors=True)

    rows = []
    for name, (ours, one_core) in seconds.items():
        engine, workers = name.split()[0], int(name.split()[1])
        # The ceiling for n workers: n cores at the one-core rate of the same round, as the seconds the whole
        # folder would take them.
        whole_folder = bench.writer_photos / sample_size / workers
        timings = {"ours": ours, "ceiling": [value * whole_folder for value in one_core]}
        row = rate_row(f"writer: {bench.writer_photos} photos -> 150x150x3 raw records, engine={engine}, "
                       f"{workers} worker(s)", "images/s", bench.writer_photos, timings, "ours", ceiling="ceiling")
        row.note = (f"{row.ours / workers:.0f} images/s per worker against {row.ceiling / workers:.0f} on one core in "
                    "this process; every photo kept")
        rows.append(row)
    return rows


def _one_core_work(bench: Bench, overrides: list[str]) -> tuple[Callable[[], None], int]:
    """One core decoding, resizing and encoding a sample of the photos (the tasks' work, without writing)."""
    settings, source = bench.settings(*overrides)
    examples = source.examples(PixelEncoder(settings.writer.image_encoding, settings.writer.jpeg_quality))
    sample = [item for items in examples.splits.values() for item in items][:CEILING_SAMPLE]

    def prepare_sample() -> None:
        for item in sample:
            examples.prepare(item)

    return prepare_sample, len(sample)


@contextmanager
def _ray_cluster(work_dir: Path, workers: int) -> Iterator[None]:
    """A Ray head with `workers` CPUs, this process set to connect to it as a user's shell would."""
    with ray_head(work_dir, num_cpus=workers) as (address, _, _):
        before = {key: os.environ.get(key) for key in (*RAY_ON_LOOPBACK, "RAY_ADDRESS")}
        os.environ.update({**RAY_ON_LOOPBACK, "RAY_ADDRESS": address})
        try:
            yield
        finally:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
