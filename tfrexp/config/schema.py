"""Typed schemas of the config groups tfrexp owns. Each default is written here and only here.

The YAML options under tfrexp/conf/ hold only what differs from these defaults, so code that builds a
dataclass directly (`PipelineConfig(batch_size=8)`) gets exactly what a run composed by Hydra gets.
`__post_init__` checks values (ranges, paths) with one-line errors that name the key and the value.
`dataset.source` is checked by the source kind it names (tfrexp.sources). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import MISSING

from tfrexp.errors import ConfigError


def require(condition: bool, key: str, value: Any, expectation: str) -> None:
    """Raise the one-line ConfigError `key=value: expectation` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}={value!r}: {expectation}")


def require_creatable(folder: Path, key: str, value: Any) -> None:
    """The folder exists, or the closest of its parents that does is a folder this process may write in."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    require(existing.is_dir(), key, value, f"cannot be created: {existing} is not a directory")
    require(os.access(existing, os.W_OK | os.X_OK), key, value, f"cannot be created: {existing} is not writable")


# What a run reports, and so what trainer.objective can name: the loss and accuracy Keras reports for training
# (and `val_` for the validation split) every epoch, and the test split's (tfrexp.training.fit).
OBJECTIVES = ("val_accuracy", "val_loss", "accuracy", "loss", "test_accuracy", "test_loss")


def objective_split(objective: str) -> str:
    """The split an objective is measured on: the records must have it."""
    return "validation" if objective.startswith("val_") else "test" if objective.startswith("test_") else "train"


class Toggle(str, enum.Enum):
    """Three-way switch for features whose best default depends on the hardware."""

    auto = "auto"
    on = "on"
    off = "off"


class Compression(str, enum.Enum):
    none = "none"
    GZIP = "GZIP"
    ZLIB = "ZLIB"


class ImageEncoding(str, enum.Enum):
    raw = "raw"  # uint8 pixels, row-major HWC: biggest on disk, no decoding cost when read
    png = "png"  # lossless
    jpeg = "jpeg"  # lossy (writer.jpeg_quality), smallest


class WriterEngine(str, enum.Enum):
    local = "local"  # this machine: the files decoded by writer.num_workers processes
    ray = "ray"  # a Ray cluster: one task per shard, on storage every node sees at the same path


class Backend(str, enum.Enum):
    tensorflow = "tensorflow"
    jax = "jax"  # Keras 3 on JAX (pip install 'tfrexp[jax]'); tf.data still reads the records


class Distribution(str, enum.Enum):
    """How training spreads over the devices of one machine (tf.distribute)."""

    auto = "auto"  # mirrored when the machine has more than one GPU, else none
    none = "none"  # one device: the first GPU, else the CPU
    mirrored = "mirrored"  # MirroredStrategy over every GPU (every logical CPU device when there is no GPU)


class Repeat(str, enum.Enum):
    infinite = "infinite"  # repeat forever; fit gets steps_per_epoch from the manifest's counts
    per_epoch = "per_epoch"  # a finite dataset that fit iterates once per epoch
    epochs = "epochs"  # repeat trainer.epochs times inside one fit epoch


class Parse(str, enum.Enum):
    batch = "batch"  # batch the serialized records, then parse the whole batch in one op (raw records)
    per_example = "per_example"  # parse each record, then batch (the walkthrough's way)


class Cache(str, enum.Enum):
    auto = "auto"  # memory when the split's decoded records fit in pipeline.cache_budget_mb, else none
    none = "none"
    memory = "memory"
    disk = "disk"


@dataclass
class DatasetConfig:
    name: str = MISSING
    image_shape: List[int] = MISSING  # [height, width, channels]
    class_names: Optional[List[str]] = None  # null: image folders take their sorted folder names / labels
    validation_fraction: float = 0.1  # carved from train: seeded draw (arrays) or path hash (image folders)
    split_seed: int = 0
    max_examples_per_split: Optional[int] = None  # cut each source split to its first N examples
    source: Any = MISSING  # `kind` names a module of tfrexp.sources, whose `Settings` types the rest

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name and "\\" not in self.name and self.name not in {".", ".."},
                "dataset.name", self.name, "must be a plain name (no path separators)")
        require(len(self.image_shape) == 3 and all(d > 0 for d in self.image_shape), "dataset.image_shape",
                list(self.image_shape), "must be [height, width, channels], all > 0")
        require(self.class_names is None or len(self.class_names) >= 2, "dataset.class_names", self.class_names,
                "needs >= 2 classes")
        require(0.0 <= self.validation_fraction < 1.0, "dataset.validation_fraction", self.validation_fraction,
                "must be in [0, 1)")
        require(self.max_examples_per_split is None or self.max_examples_per_split > 0,
                "dataset.max_examples_per_split", self.max_examples_per_split, "must be null or > 0")


@dataclass
class WriterConfig:
    shard_size_mb: float = 8.0  # target size of one shard; the last one may be smaller (MNIST train: 6 shards)
    compression: Compression = Compression.none
    image_encoding: ImageEncoding = ImageEncoding.raw
    jpeg_quality: int = 90
    num_workers: Optional[int] = None  # engine=local: processes that decode/encode image files; null: one per core
    engine: WriterEngine = WriterEngine.local  # where the shard tasks run; the records are the same bytes
    ray_address: Optional[str] = None  # engine=ray: the cluster; null: $RAY_ADDRESS, else "auto" (`ray start` here)
    force: bool = False  # rewrite even when a finished version with this fingerprint exists

    def __post_init__(self) -> None:
        require(self.shard_size_mb > 0, "writer.shard_size_mb", self.shard_size_mb, "must be > 0")
        require(1 <= self.jpeg_quality <= 100, "writer.jpeg_quality", self.jpeg_quality, "must be in [1, 100]")
        require(self.num_workers is None or self.num_workers > 0, "writer.num_workers", self.num_workers,
                "must be null or > 0")

    @property
    def workers(self) -> int:
        return self.num_workers or os.cpu_count() or 1


@dataclass
class PipelineConfig:
    """The `autotune` pipeline: what the benchmark found fastest among correct settings."""

    batch_size: int = 256
    parallelism: Any = "autotune"  # "autotune" or a fixed number of parallel calls
    shuffle_buffer: int = 10_000  # examples (raw records are held in blocks of them: pipeline.py); 0: no shuffling
    cache: Cache = Cache.auto
    cache_budget_mb: float = 1024.0  # cache=auto caches a split in memory up to this size (MNIST train: 45 MB)
    deterministic: bool = False  # true: element order is reproducible at some cost in speed
    repeat: Repeat = Repeat.per_epoch
    parse: Parse = Parse.batch  # PNG/JPEG records are always decoded per example, in parallel

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "pipeline.batch_size", self.batch_size, "must be > 0")
        require(self.shuffle_buffer >= 0, "pipeline.shuffle_buffer", self.shuffle_buffer, "must be >= 0")
        require(self.parallelism == "autotune" or (isinstance(self.parallelism, int) and self.parallelism > 0),
                "pipeline.parallelism", self.parallelism, "must be 'autotune' or an integer > 0")


@dataclass
class TrainerConfig:
    # The defaults reach 99% MNIST test accuracy in one epoch of the default model: a one-cycle-like schedule
    # (linear warm-up to a high peak, cosine decay to 0) with Adam's faster-forgetting betas.
    epochs: int = 1
    learning_rate: float = 0.015  # peak rate of the schedule (0.01 until 2026-12-05; docs/benchmarks.md)
    schedule: str = "cosine"  # cosine (linear warm-up, cosine decay to 0) | constant
    warmup_fraction: float = 0.25  # share of all steps spent warming up (cosine only)
    weight_decay: float = 0.0  # > 0: AdamW
    beta_1: float = 0.7  # Adam's moment decay rates (Keras's defaults: 0.9, 0.999)
    beta_2: float = 0.9
    seed: int = 42
    # Mixed precision: float16 on a GPU, bfloat16 on a CPU. auto: on for GPUs with tensor cores and, under the
    # TensorFlow backend, for CPUs with AMX-BF16 (1.6x the default's float32 fit, docs/benchmarks.md#precision).
    mixed_precision: Toggle = Toggle.auto
    jit_compile: Toggle = Toggle.auto  # auto: Keras decides (XLA on GPU)
    # Over several devices, pipeline.batch_size stays the global batch (split across replicas) and
    # learning_rate is not rescaled: a run means the same thing on one GPU or eight.
    distribution: Distribution = Distribution.auto
    # Sweeps on a machine with several GPUs (docs/scale-out.md, tfrexp/training/devices.py): each job that runs
    # beside others in a worker process (the joblib launcher) takes GPUs of its own before TensorFlow loads,
    # and its worker keeps them for its life; a Ray task asks Ray for them (hydra/launcher=ray_cluster). A
    # single run, and jobs run one after another in the sweep's own process, see every GPU.
    gpus_per_job: int = 1  # 0: jobs take none of their own and share every GPU of the sweep
    # The GPU ids (as in CUDA_VISIBLE_DEVICES) a joblib sweep shares out; null: the sweep's
    # CUDA_VISIBLE_DEVICES, else every GPU of the machine.
    sweep_gpus: Optional[List[str]] = None
    steps_per_execution: int = 1
    objective: str = "val_accuracy"  # what the entrypoint returns to a sweeper
    objective_direction: str = "max"  # max | min: which end of the objective is best
    verbose: int = 1  # Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch
    backend: Backend = Backend.tensorflow  # the Keras backend; set before Keras is first imported
    backend_logs: bool = False  # true: TensorFlow's C++ start-up lines (CUDA probing, oneDNN notices) are shown
    resume: bool = False  # continue the latest interrupted run of this same config, from its last epoch

    def __post_init__(self) -> None:
        require(self.epochs > 0, "trainer.epochs", self.epochs, "must be > 0")
        require(self.learning_rate > 0, "trainer.learning_rate", self.learning_rate, "must be > 0")
        require(self.schedule in {"cosine", "constant"}, "trainer.schedule", self.schedule, "must be cosine|constant")
        require(0 <= self.warmup_fraction < 1, "trainer.warmup_fraction", self.warmup_fraction, "must be in [0, 1)")
        require(self.weight_decay >= 0, "trainer.weight_decay", self.weight_decay, "must be >= 0")
        require(0 <= self.beta_1 < 1, "trainer.beta_1", self.beta_1, "must be in [0, 1)")
        require(0 <= self.beta_2 < 1, "trainer.beta_2", self.beta_2, "must be in [0, 1)")
        require(self.steps_per_execution > 0, "trainer.steps_per_execution", self.steps_per_execution,
                "must be > 0")
        require(self.gpus_per_job >= 0, "trainer.gpus_per_job", self.gpus_per_job, "must be >= 0")
        if self.sweep_gpus is not None:
            gpus = list(self.sweep_gpus)
            require(all(str(gpu).strip() for gpu in gpus) and len(set(gpus)) == len(gpus), "trainer.sweep_gpus", gpus,
                    "must be distinct GPU ids")
            require(self.gpus_per_job <= len(gpus), "trainer.gpus_per_job", self.gpus_per_job,
                    f"more than the {len(gpus)} GPUs of trainer.sweep_gpus")
        require(self.objective in OBJECTIVES, "trainer.objective", self.objective,
                f"must be one of {', '.join(OBJECTIVES)}")
        require(self.objective_direction in {"max", "min"}, "trainer.objective_direction",
                self.objective_direction, "must be max|min")
        require(self.verbose in {0, 1, 2}, "trainer.verbose", self.verbose, "must be 0, 1 or 2")
        require(self.backend is Backend.tensorflow or self.distribution is not Distribution.mirrored,
                "trainer.distribution", self.distribution.value, "needs trainer.backend=tensorflow (tf.distribute)")


@dataclass
class TrackingConfig:
    uri: str = MISSING  # conf/tracking/mlflow.yaml: sqlite:///<paths.output_dir>/mlflow.db; or http://host:port
    experiment: str = "tfrexp"
    # For a new experiment in a local store (a path or a URI); a server keeps artifacts where it was told to.
    artifact_location: Optional[str] = None
    run_name: Optional[str] = None  # null: <dataset>-<model>, plus what a sweep varies
    log_model: bool = True
    system_metrics: bool = True  # CPU, memory (and GPU with nvidia-ml-py) use, sampled every second


@dataclass
class PathsConfig:
    # Everything a run writes: records, mlflow.db, artifacts, Hydra run folders (conf/paths/default.yaml:
    # $TFREXP_OUTPUT_DIR or outputs/, relative to the folder tfrexp is started in).
    output_dir: str = MISSING
    # Where source data sets are looked for first (<data_dir>/<dataset>/); null: none configured.
    data_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            require(Path(self.data_dir).is_dir(), "paths.data_dir", self.data_dir, "is not an existing directory")
        require(not Path(self.output_dir).exists() or Path(self.output_dir).is_dir(), "paths.output_dir",
                self.output_dir, "exists and is not a directory")
        require_creatable(Path(self.output_dir), "paths.output_dir", self.output_dir)

    @property
    def records_dir(self) -> Path:
        return Path(self.output_dir) / "records"


@dataclass
class SearchConfig:
    """Set on each trial's job by the Optuna sweeper (hparams_search=mnist_optuna), not by hand: the study the
    trial reports its per-epoch objective to, so that the search's pruner can stop it early."""

    storage: Optional[str] = None  # the study's database URL (hydra.sweeper.storage)
    study: Optional[str] = None  # hydra.sweeper.study_name
    trial: Optional[int] = None  # the trial's number in the study; null: not a search trial

    def __post_init__(self) -> None:
        require(self.trial is None or (self.storage is not None and self.study is not None), "search.trial",
                self.trial, "needs search.storage and search.study")


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    writer: WriterConfig = field(default_factory=WriterConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    model: Any = MISSING  # a `_target_` node: Keras model builder and its arguments
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        # Here, after paths: the default store lies in paths.output_dir, which names the problem first.
        if self.tracking.uri.startswith("sqlite:///"):  # its folder is made when the run connects
            require_creatable(Path(self.tracking.uri[len("sqlite:///"):]).parent, "tracking.uri", self.tracking.uri)
