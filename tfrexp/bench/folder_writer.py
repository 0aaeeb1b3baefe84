"""Case `writer`, its photo part: a cats-vs-dogs folder written to records as shard tasks, with writer.engine=local
and with writer.engine=ray on a Ray head started here (127.0.0.1), each with 1 and 2 workers, against the
ceiling of one core decoding and resizing the same photos in this process (no records, no processes)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tfrexp.bench.local_ray import RAY_ON_LOOPBACK, ray_head
from tfrexp.bench.measure import Bench, Row, median_seconds
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
    ceiling = _one_core_rate(bench, overrides)
    rates: dict[tuple[str, int], float] = {}

    def write(*engine: str) -> None:
        settings, source = bench.settings(*overrides, *engine)
        record_set = ensure_records(source, settings.writer, records_dir)
        written = sum(info.num_examples for info in record_set.manifest.splits.values())
        if written != bench.writer_photos:
            raise RuntimeError(f"the writer kept {written} of {bench.writer_photos} photos")

    for workers in WORKERS:
        rates["local", workers] = bench.writer_photos / median_seconds(
            lambda: write("writer.engine=local", f"writer.num_workers={workers}"), bench.repeats, warmup=0)
    for workers in WORKERS:
        with _ray_cluster(bench.work_dir, workers):
            rates["ray", workers] = bench.writer_photos / median_seconds(
                lambda: write("writer.engine=ray"), bench.repeats, warmup=0)
    shutil.rmtree(records_dir, ignore_errors=True)

    rows = []
    for (engine, workers), rate in rates.items():
        scaling = "" if workers == 1 else f"; {rate / rates[engine, 1]:.2f}x its 1-worker rate"
        rows.append(Row(f"writer: {bench.writer_photos} photos -> 150x150x3 raw records, engine={engine}, "
                        f"{workers} worker(s)", "images/s", rate, ceiling=ceiling * workers,
                        note=f"{rate / workers:.0f} images/s per worker against {ceiling:.0f} on one core in "
                             f"this process{scaling}; every photo kept"))
    return rows


def _one_core_rate(bench: Bench, overrides: list[str]) -> float:
    """Photos per second one core decodes, resizes and encodes (the tasks' work, without writing)."""
    settings, source = bench.settings(*overrides)
    examples = source.examples(PixelEncoder(settings.writer.image_encoding, settings.writer.jpeg_quality))
    sample = [item for items in examples.splits.values() for item in items][:CEILING_SAMPLE]

    def prepare_all() -> None:
        for item in sample:
            examples.prepare(item)

    return len(sample) / median_seconds(prepare_all, bench.repeats)


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
