"""`tfrexp-bench`: our writer, input pipelines, training and start-up against the obvious way of doing the
same work, on this machine, in one run.

Each figure is the median of several timed repetitions after a warm-up. Every pipeline is first checked
once, outside the timing, to deliver every example exactly once with the right content, and each timed
epoch checks its count, so a fast wrong pipeline cannot win.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import logging
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from tfrexp import config, sources
from tfrexp.config import Cache, PipelineConfig
from tfrexp.pipeline import build_dataset
from tfrexp.records.schema import parse_batch, parse_encoded
from tfrexp.records.writer import ensure_records, write_split
from tfrexp.synthetic import make_catdog_folder

log = logging.getLogger("tfrexp.bench")

CASES = ("writer", "input", "catdog", "training", "startup")


@dataclass
class Row:
    case: str
    unit: str
    ours: float
    baseline: float | None = None  # the obvious way
    ceiling: float | None = None  # the fastest this work can go here (e.g. arrays already in memory)
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.baseline else None

    @property
    def share_of_ceiling(self) -> float | None:
        return self.ours / self.ceiling if self.ceiling else None


@dataclass
class Bench:
    """What every case shares: where to write, how often to repeat, the MNIST settings."""

    work_dir: Path
    repeats: int
    catdog_images: int
    full: bool

    def settings(self, *overrides: str) -> config.Config:
        return config.to_settings(config.compose(f"paths.output_dir={self.work_dir}", *overrides))


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# --- 1. writer ----------------------------------------------------------------------------------------


def walkthrough_write(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The walkthrough's writer: one Example per image, the array through tf.io.serialize_tensor."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(images, labels):
            height, width, depth = image.shape
            feature = {
                "height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
                "width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
                "depth": tf.train.Feature(int64_list=tf.train.Int64List(value=[depth])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                "image_raw": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.serialize_tensor(image).numpy()])
                ),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def bench_writer(bench: Bench) -> list[Row]:
    settings = bench.settings("dataset.validation_fraction=0")
    splits = sources.load_splits(settings.dataset)  # train 60k + test 10k, in memory for both writers
    total = sum(len(labels) for _, labels in splits.values())
    megabytes = sum(images.nbytes for images, _ in splits.values()) / 1e6

    def ours() -> None:
        with tempfile.TemporaryDirectory(dir=bench.work_dir) as directory:
            for split, (images, labels) in splits.items():
                items = sources.PreparedSplit(len(labels), sources.encode_arrays(images, labels, settings.writer.image_encoding, 90))
                info, _ = write_split(Path(directory), settings.dataset, split, items, settings.writer)
                assert info.num_examples == len(labels)

    def walkthrough() -> None:
        with tempfile.TemporaryDirectory(dir=bench.work_dir) as directory:
            for split, (images, labels) in splits.items():
                walkthrough_write(Path(directory) / f"{split}.tfrecord", images, labels)

    ours_s = median_seconds(ours, bench.repeats)
    base_s = median_seconds(walkthrough, max(1, bench.repeats - 1))
    return [
        Row("writer: MNIST train+test (70k)", "examples/s", total / ours_s, total / base_s, target=">= 5x",
            note=f"{megabytes / ours_s:.0f} MB/s ours, {megabytes / base_s:.0f} MB/s walkthrough"),
    ]


# --- 2. training input ----------------------------------------------------------------------------------


def _digests(images: np.ndarray, labels: np.ndarray) -> collections.Counter:
    flat = images.reshape(len(images), -1)
    return collections.Counter(hashlib.blake2b(row.tobytes() + int(label).to_bytes(8, "little"),
                                               digest_size=12).digest() for row, label in zip(flat, labels))


def check_epoch(dataset: tf.data.Dataset, expected: collections.Counter, name: str) -> None:
    """One untimed epoch: every example exactly once, with the right pixels and label."""
    seen: collections.Counter = collections.Counter()
    for images, labels in dataset.as_numpy_iterator():
        seen.update(_digests(images, labels))
    if seen != expected:
        missing, extra = sum((expected - seen).values()), sum((seen - expected).values())
        raise RuntimeError(f"{name}: the epoch is wrong ({missing} examples missing or altered, {extra} extra)")


def timed_epoch(dataset: tf.data.Dataset, count: int, name: str) -> Callable[[], None]:
    def run() -> None:
        delivered = 0
        for _, labels in dataset:
            delivered += int(labels.shape[0])
        if delivered != count:
            raise RuntimeError(f"{name}: delivered {delivered} examples, expected {count}")
    return run


def walkthrough_pipeline(path: Path, batch_size: int, shuffle: int) -> tf.data.Dataset:
    """The walkthrough's reader: parse_single_example and parse_tensor per example."""
    spec = {name: tf.io.FixedLenFeature([], tf.int64) for name in ("height", "width", "depth", "label")}
    spec["image_raw"] = tf.io.FixedLenFeature([], tf.string)

    def parse(record):
        features = tf.io.parse_single_example(record, spec)
        image = tf.io.parse_tensor(features["image_raw"], out_type=tf.uint8)
        return tf.ensure_shape(image, [28, 28, 1]), features["label"]

    dataset = tf.data.TFRecordDataset(str(path)).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.shuffle(shuffle).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def bench_input(bench: Bench) -> list[Row]:
    settings = bench.settings("dataset.validation_fraction=0")
    record_set = ensure_records(settings.dataset, settings.writer, settings.paths.records_dir)
    images, labels = sources.load_splits(settings.dataset)["train"]
    count = len(labels)
    expected = _digests(images, labels)
    walkthrough_file = bench.work_dir / "walkthrough-mnist-train.tfrecord"
    if not walkthrough_file.is_file():
        walkthrough_write(walkthrough_file, images, labels)

    batch, shuffle = 128, 10_000
    pipelines = {
        "ours": build_dataset(record_set.directory, record_set.manifest, "train",
                              PipelineConfig(batch_size=batch, shuffle_buffer=shuffle, cache=Cache.none),
                              training=True),
        "ours cached": build_dataset(record_set.directory, record_set.manifest, "train",
                                     PipelineConfig(batch_size=batch, shuffle_buffer=shuffle, cache=Cache.memory),
                                     training=True),
        "walkthrough": walkthrough_pipeline(walkthrough_file, batch, shuffle),
        "in memory": tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(shuffle).batch(batch)
        .prefetch(tf.data.AUTOTUNE),
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


# --- 3. cats vs dogs: a folder of JPEG files against our records ------------------------------------------


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

    def raw_folder() -> tf.data.Dataset:
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

    baseline = raw_folder()
    labels_check(baseline, "raw folder")
    baseline_rate = count / median_seconds(timed_epoch(baseline, count, "raw folder"), bench.repeats)
    rows = []
    for encoding in ("raw", "png", "jpeg"):
        settings = bench.settings("dataset=catdog", f"dataset.source.path={folder}", "dataset.validation_fraction=0",
                                  "dataset.source.test_fraction=0", f"dataset.class_names=[{','.join(class_names)}]",
                                  f"writer.image_encoding={encoding}")
        record_set = ensure_records(settings.dataset, settings.writer, settings.paths.records_dir)
        # Shards in a new order each epoch and a buffer of 1,000 records (67 MB raw) mix the examples; the
        # folder pipeline shuffles file names, which costs nothing. No cache: this compares reading paths.
        ours = build_dataset(record_set.directory, record_set.manifest, "train",
                             PipelineConfig(batch_size=batch, shuffle_buffer=1000, cache=Cache.none), training=True)
        ours = ours.map(lambda images, labels: (tf.cast(images, tf.float32), labels))  # same tensors as the baseline
        labels_check(ours, f"records ({encoding})")
        rate = count / median_seconds(timed_epoch(ours, count, encoding), bench.repeats)
        size = sum(shard.num_bytes for info in record_set.manifest.splits.values() for shard in info.shards) / 1e6
        decode_us = _decode_microseconds(record_set)
        rows.append(Row(f"catdog: {count} photos -> 150x150x3, records ({encoding}) vs JPEG folder", "images/s",
                        rate, baseline_rate, target=">= 3x",
                        note=f"records {size:.0f} MB; read+decode {decode_us:.0f} us/image on one core"))
    return rows


def _decode_microseconds(record_set, images: int = 500) -> float:
    """The profile behind a catdog row: reading and decoding one record at a time, on one core."""
    manifest = record_set.manifest
    files = [str(path) for path in manifest.shard_paths(record_set.directory, "train")]
    shape = manifest.image_shape
    records = tf.data.TFRecordDataset(files).take(images)
    if manifest.image_encoding == "raw":
        decoded = records.batch(1).map(lambda serialized: parse_batch(serialized, shape))
    else:
        decoded = records.map(lambda serialized: parse_encoded(serialized, shape))
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    decoded = decoded.with_options(options)
    count = min(images, manifest.splits["train"].num_examples)
    return median_seconds(lambda: sum(1 for _ in decoded), 1) / count * 1e6


# --- 4. training ------------------------------------------------------------------------------------------


def bench_training(bench: Bench) -> list[Row]:
    """Steps/s of the default MNIST config, and how much of a step is spent waiting for input: the same
    model fed one cached batch over and over costs no input work, so the difference is the wait."""
    import keras

    from tfrexp import training
    from tfrexp.experiment import model_builder
    from tfrexp.pipeline import fit_plan

    settings = bench.settings()
    record_set = ensure_records(settings.dataset, settings.writer, settings.paths.records_dir)
    manifest = record_set.manifest
    keras.utils.set_random_seed(settings.trainer.seed)
    device = training.configure_device(settings.trainer)
    plan = fit_plan(manifest.splits["train"].num_examples, settings.pipeline, settings.trainer.epochs)
    model = model_builder(settings.model)(input_shape=manifest.image_shape, num_classes=len(manifest.class_names))
    training.compile_model(model, settings.trainer, plan, device)
    real = build_dataset(record_set.directory, manifest, "train", settings.pipeline, training=True).repeat()
    no_input = real.take(1).cache().repeat()
    steps = 60 if not bench.full else 200

    def rate(dataset: tf.data.Dataset) -> float:
        model.fit(dataset, steps_per_epoch=10, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing, caches
        started = time.perf_counter()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        return steps / (time.perf_counter() - started)

    with_input, without_input = rate(real), rate(no_input)
    wait = max(0.0, 1 - with_input / without_input)
    batch = settings.pipeline.batch_size
    rows = [Row(f"training: default MNIST cnn, batch {batch}, {device.device}", "steps/s", with_input,
                ceiling=without_input, target="input wait < 5%",
                note=f"{with_input * batch:.0f} examples/s; input wait {wait:.1%} of step time")]
    if bench.full:
        rows.append(_time_to_accuracy(bench, 0.99))
    return rows


def _time_to_accuracy(bench: Bench, target: float) -> Row:
    """A real `tfrexp` run of the default config; seconds from launch to the epoch whose test accuracy passes."""
    output = bench.work_dir / "time-to-accuracy"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tfrexp", f"paths.output_dir={output}", "trainer.verbose=0",
                             "tracking.log_model=false", "trainer.objective=test_accuracy"],
                            capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    accuracy = float(result.stdout.split("test_accuracy=")[1].split(",")[0])
    reached = "reached" if accuracy >= target else "NOT reached"
    return Row(f"training: default config to {target:.0%} test accuracy (2 epochs, whole run)", "s", seconds,
               note=f"test accuracy {accuracy:.4f}, {reached}")


# --- 5. start-up ------------------------------------------------------------------------------------------


def bench_startup(bench: Bench) -> list[Row]:
    settings = bench.settings()
    ensure_records(settings.dataset, settings.writer, settings.paths.records_dir)  # built before timing
    reuse = median_seconds(lambda: ensure_records(settings.dataset, settings.writer, settings.paths.records_dir),
                           bench.repeats)
    launches = []
    for _ in range(max(1, bench.repeats - 1)):
        launches.append(_launch_to_first_step(bench.work_dir))
    return [
        Row("start-up: reuse check (fingerprint + manifest)", "s", reuse, target="< 0.5 s"),
        Row("start-up: `tfrexp` launch to first training step", "s", statistics.median(launches),
            note="records already built; includes Python, TensorFlow and MLflow start"),
    ]


def _launch_to_first_step(work_dir: Path) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "tfrexp", f"paths.output_dir={work_dir}", "trainer.verbose=0",
         "tracking.experiment=bench-startup"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for line in process.stdout:
            if "first training step done" in line:
                return time.perf_counter() - started
        raise RuntimeError(f"tfrexp ended (code {process.wait()}) before its first training step")
    finally:
        process.send_signal(signal.SIGINT)  # the run ends KILLED in MLflow
        process.wait(timeout=120)


# --- the suite --------------------------------------------------------------------------------------------


def machine() -> dict:
    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]
    return {"cores": os.cpu_count(), "gpu": ", ".join(gpus) or "none", "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "tensorflow": tf.__version__}


def render(rows: list[Row], host: dict) -> str:
    def number(value: float | None, suffix: str = "") -> str:
        if value is None:
            return "-"
        if value < 1:
            return f"{value:.2g}{suffix}"
        return f"{value:,.2f}{suffix}" if value < 100 else f"{value:,.0f}{suffix}"

    lines = [f"machine: {host['cores']} cores, GPU: {host['gpu']}, TensorFlow {host['tensorflow']}", "",
             "| case | unit | ours | baseline | ratio | ceiling | share of ceiling | target | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        share = f"{row.share_of_ceiling:.0%}" if row.share_of_ceiling is not None else "-"
        lines.append(f"| {row.case} | {row.unit} | {number(row.ours)} | {number(row.baseline)} | "
                     f"{number(row.ratio, 'x')} | {number(row.ceiling)} | {share} | {row.target} | {row.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per figure (median)")
    parser.add_argument("--catdog-images", type=int, default=2000)
    parser.add_argument("--full", action="store_true", help="also train to 99%% test accuracy (about 5 minutes)")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--mlflow", action="store_true", help="also log the results as an MLflow run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cases = [case for case in args.cases.split(",") if case]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")

    args.output.mkdir(parents=True, exist_ok=True)
    bench = Bench(work_dir=args.output.resolve(), repeats=args.repeats, catdog_images=args.catdog_images,
                  full=args.full)
    runners = {"writer": bench_writer, "input": bench_input, "catdog": bench_catdog, "training": bench_training,
               "startup": bench_startup}
    started = time.perf_counter()
    rows = []
    for case in cases:
        case_started = time.perf_counter()
        rows.extend(runners[case](bench))
        print(f"[{case}: {time.perf_counter() - case_started:.0f} s]", file=sys.stderr, flush=True)
    host = machine()
    table = render(rows, host)
    print(table)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    report = {"date": stamp, "machine": host, "seconds": time.perf_counter() - started,
              "command": " ".join(["tfrexp-bench", *(argv if argv is not None else sys.argv[1:])]),
              "rows": [{**asdict(row), "ratio": row.ratio, "share_of_ceiling": row.share_of_ceiling} for row in rows]}
    path = args.output / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwritten {path} ({report['seconds']:.0f} s in all)")
    if args.mlflow:
        _log_to_mlflow(report, table)


def _log_to_mlflow(report: dict, table: str) -> None:
    import mlflow

    from tfrexp import tracking

    settings = config.to_settings(config.compose("tracking.experiment=bench")).tracking
    experiment_id = tracking.connect(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"bench-{report['date']}"):
        mlflow.log_params({f"machine.{key}": value for key, value in report["machine"].items()})
        for row in report["rows"]:
            name = re.sub(r"[^a-z0-9]+", "_", row["case"].lower()).strip("_")[:80]  # a metric name MLflow takes
            mlflow.log_metric(f"{name}.ours", row["ours"])
            if row["ratio"] is not None:
                mlflow.log_metric(f"{name}.ratio", row["ratio"])
        mlflow.log_text(table, "bench.md")
        mlflow.log_dict(report, "bench.json")


if __name__ == "__main__":
    main()
