"""Typed schemas for the config groups tfrexp owns, and their conversion to plain settings objects.

Hydra checks keys and types against these dataclasses at compose time; `to_settings` then builds the
dataclass objects, whose `__post_init__` checks values (ranges, paths). Nothing here imports TensorFlow,
so a bad config is refused in well under a second.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tfrexp.errors import ConfigError
from tfrexp.records.encoding import ImageEncoding


def _require(condition: bool, key: str, value: Any, expectation: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r}: {expectation}")


class Toggle(str, enum.Enum):
    """Three-way switch for features whose best default depends on the hardware."""

    auto = "auto"
    on = "on"
    off = "off"


class Compression(str, enum.Enum):
    none = "none"
    GZIP = "GZIP"
    ZLIB = "ZLIB"


class Repeat(str, enum.Enum):
    infinite = "infinite"  # repeat forever; fit gets steps_per_epoch from the manifest's counts
    per_epoch = "per_epoch"  # a finite dataset that fit iterates once per epoch
    epochs = "epochs"  # repeat trainer.epochs times inside one fit epoch


class Cache(str, enum.Enum):
    auto = "auto"  # memory when the split's decoded records fit in pipeline.cache_budget_mb, else none
    none = "none"
    memory = "memory"
    disk = "disk"


# --- sources: one schema per kind; `dataset.source.kind` picks which one checks the node ------------


@dataclass
class IdxSource:
    """The MNIST family's IDX files (MNIST, Fashion-MNIST, KMNIST)."""

    kind: str = "idx"
    dir: Optional[str] = None  # searched first; null when no data directory is configured
    download_dir: str = MISSING  # where files are downloaded to (and searched second)
    mirror: Optional[str] = None  # base URL; null disables downloading
    # split -> {"images": file name, "labels": file name}, without ".gz" (both spellings are read)
    files: Dict[str, Dict[str, str]] = MISSING
    # file name -> sha256 of the decompressed content; files not listed are checked for structure only
    sha256: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split, pair in self.files.items():
            _require(
                set(pair) == {"images", "labels"},
                f"dataset.source.files.{split}",
                dict(pair),
                "needs exactly the keys 'images' and 'labels'",
            )


@dataclass
class TfdsSource:
    """Any TensorFlow Datasets builder, read as (image, label) pairs."""

    kind: str = "tfds"
    name: str = MISSING
    data_dir: Optional[str] = None
    download: bool = True
    splits: Dict[str, str] = field(default_factory=lambda: {"train": "train", "test": "test"})
    image_key: str = "image"
    label_key: str = "label"


class Resize(str, enum.Enum):
    squash = "squash"  # stretch to the target size, ignoring the aspect ratio
    pad = "pad"  # fit inside the target, keep the aspect ratio, pad with black
    crop = "crop"  # fill the target, keep the aspect ratio, crop the centre


class Layout(str, enum.Enum):
    auto = "auto"  # class_folders if the folder holds subfolders, else filename_label
    class_folders = "class_folders"  # <path>/<class>/<image>  (PetImages/Cat/1.jpg, train/cats/cat.1.jpg)
    filename_label = "filename_label"  # <path>/<image>, the class in the name (train/cat.0.jpg)


@dataclass
class ImageFolderSource:
    """A folder of image files, labelled by subfolder or by file name, resized at write time."""

    kind: str = "image_folder"
    path: Optional[str] = None
    layout: Layout = Layout.auto
    filename_pattern: str = r"^(?P<label>[A-Za-z]+)[._-]"  # regex with a `label` group (filename_label)
    extensions: List[str] = field(default_factory=lambda: [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"])
    resize: Resize = Resize.squash
    test_fraction: float = 0.1  # of the files, when the folder has no test/ subfolder

    def __post_init__(self) -> None:
        _require(self.path is not None, "dataset.source.path", self.path,
                 "is not set: set TFREXP_DATA_DIR or dataset.source.path=<folder>")
        _require(Path(self.path).is_dir(), "dataset.source.path", self.path, "is not an existing directory")
        _require(0.0 <= self.test_fraction < 1.0, "dataset.source.test_fraction", self.test_fraction,
                 "must be in [0, 1)")
        if self.layout is not Layout.class_folders:
            try:
                _require("label" in re.compile(self.filename_pattern).groupindex, "dataset.source.filename_pattern",
                         self.filename_pattern, "needs a (?P<label>...) group")
            except re.error as error:
                raise ConfigError(f"dataset.source.filename_pattern={self.filename_pattern!r}: {error}") from None


SOURCE_SCHEMAS = {"idx": IdxSource, "tfds": TfdsSource, "image_folder": ImageFolderSource}


# --- the groups ---------------------------------------------------------------------------------------


@dataclass
class DatasetConfig:
    name: str = MISSING
    image_shape: List[int] = MISSING  # [height, width, channels]
    class_names: Optional[List[str]] = None  # null: image folders take their sorted folder names / labels
    validation_fraction: float = 0.1  # carved from train: seeded draw (arrays) or path hash (image folders)
    split_seed: int = 0
    max_examples_per_split: Optional[int] = None  # cut each source split to its first N examples
    source: Any = MISSING  # checked against SOURCE_SCHEMAS[source.kind]

    def __post_init__(self) -> None:
        _require(
            bool(self.name) and "/" not in self.name and "\\" not in self.name and self.name not in {".", ".."},
            "dataset.name",
            self.name,
            "must be a plain name (no path separators)",
        )
        _require(
            len(self.image_shape) == 3 and all(d > 0 for d in self.image_shape),
            "dataset.image_shape",
            list(self.image_shape),
            "must be [height, width, channels], all > 0",
        )
        _require(
            self.class_names is None or len(self.class_names) >= 2,
            "dataset.class_names",
            self.class_names,
            "needs >= 2 classes",
        )
        _require(
            0.0 <= self.validation_fraction < 1.0,
            "dataset.validation_fraction",
            self.validation_fraction,
            "must be in [0, 1)",
        )
        _require(
            self.max_examples_per_split is None or self.max_examples_per_split > 0,
            "dataset.max_examples_per_split",
            self.max_examples_per_split,
            "must be null or > 0",
        )
        self.source = _source_settings(self.source)
        _require(
            self.class_names is not None or isinstance(self.source, ImageFolderSource),
            "dataset.class_names",
            self.class_names,
            f"is required for a {self.source.kind} source",
        )


def _source_settings(node: Any) -> Any:
    node = OmegaConf.create(node) if not isinstance(node, DictConfig) else node
    kind = node.get("kind")
    _require(kind in SOURCE_SCHEMAS, "dataset.source.kind", kind, f"must be one of {sorted(SOURCE_SCHEMAS)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SOURCE_SCHEMAS[kind]), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = f"dataset.source.{error.full_key}" if getattr(error, "full_key", None) else "dataset.source"
        raise ConfigError(f"{key}: {error.msg}") from None


@dataclass
class WriterConfig:
    shard_size_mb: float = 8.0  # target size of one shard; the last one may be smaller
    compression: Compression = Compression.none
    image_encoding: ImageEncoding = ImageEncoding.raw
    jpeg_quality: int = 90
    num_workers: Optional[int] = None  # processes that decode/encode image files; null: one per core
    force: bool = False  # rewrite even when a finished version with this fingerprint exists

    def __post_init__(self) -> None:
        _require(self.shard_size_mb > 0, "writer.shard_size_mb", self.shard_size_mb, "must be > 0")
        _require(1 <= self.jpeg_quality <= 100, "writer.jpeg_quality", self.jpeg_quality, "must be in [1, 100]")
        _require(self.num_workers is None or self.num_workers > 0, "writer.num_workers", self.num_workers,
                 "must be null or > 0")

    @property
    def workers(self) -> int:
        return self.num_workers or os.cpu_count() or 1


@dataclass
class PipelineConfig:
    batch_size: int = 128
    parallelism: Any = "autotune"  # "autotune" or a fixed number of parallel calls
    shuffle_buffer: int = 10_000
    cache: Cache = Cache.auto
    cache_budget_mb: float = 1024.0  # cache=auto caches a split in memory up to this size
    deterministic: bool = False
    repeat: Repeat = Repeat.per_epoch

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "pipeline.batch_size", self.batch_size, "must be > 0")
        _require(self.shuffle_buffer >= 0, "pipeline.shuffle_buffer", self.shuffle_buffer, "must be >= 0")
        _require(
            self.parallelism == "autotune" or (isinstance(self.parallelism, int) and self.parallelism > 0),
            "pipeline.parallelism",
            self.parallelism,
            "must be 'autotune' or an integer > 0",
        )


@dataclass
class TrainerConfig:
    epochs: int = 2
    learning_rate: float = 3e-3  # peak rate of the schedule
    schedule: str = "cosine"  # cosine | constant
    warmup_fraction: float = 0.05  # share of all steps spent warming up (cosine only)
    weight_decay: float = 0.0
    seed: int = 42
    mixed_precision: Toggle = Toggle.auto  # auto: on for GPUs with tensor cores
    jit_compile: Toggle = Toggle.auto  # auto: Keras decides (XLA on GPU)
    steps_per_execution: int = 1
    objective: str = "val_accuracy"  # what the entrypoint returns to a sweeper
    objective_direction: str = "max"  # max | min: which end of the objective is best
    verbose: int = 1  # Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch
    resume: bool = False  # continue the latest interrupted run of this same config, from its last epoch

    def __post_init__(self) -> None:
        _require(self.epochs > 0, "trainer.epochs", self.epochs, "must be > 0")
        _require(self.learning_rate > 0, "trainer.learning_rate", self.learning_rate, "must be > 0")
        _require(self.schedule in {"cosine", "constant"}, "trainer.schedule", self.schedule, "must be cosine|constant")
        _require(0 <= self.warmup_fraction < 1, "trainer.warmup_fraction", self.warmup_fraction, "must be in [0, 1)")
        _require(self.weight_decay >= 0, "trainer.weight_decay", self.weight_decay, "must be >= 0")
        _require(self.steps_per_execution > 0, "trainer.steps_per_execution", self.steps_per_execution, "must be > 0")
        _require(
            self.objective_direction in {"max", "min"},
            "trainer.objective_direction",
            self.objective_direction,
            "must be max|min",
        )
        _require(self.verbose in {0, 1, 2}, "trainer.verbose", self.verbose, "must be 0, 1 or 2")


@dataclass
class TrackingConfig:
    uri: str = MISSING  # sqlite:///..., http://host:port, ...
    experiment: str = "tfrexp"
    artifact_location: Optional[str] = None  # used when the experiment is created; a local path or a URI
    run_name: Optional[str] = None  # null: <dataset>-<model>
    log_model: bool = True


@dataclass
class PathsConfig:
    output_dir: str = MISSING  # records, mlflow.db, artifacts, Hydra run directories
    data_dir: Optional[str] = None  # where source data sets are looked for; null: none configured

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            _require(Path(self.data_dir).is_dir(), "paths.data_dir", self.data_dir, "is not an existing directory")
        _require(
            not Path(self.output_dir).exists() or Path(self.output_dir).is_dir(),
            "paths.output_dir",
            self.output_dir,
            "exists and is not a directory",
        )

    @property
    def records_dir(self) -> Path:
        return Path(self.output_dir) / "records"


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    writer: WriterConfig = MISSING
    pipeline: PipelineConfig = MISSING
    model: Any = MISSING  # a `_target_` node: Keras model builder and its arguments
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING


def _subdir(parent: Optional[str], name: str) -> Optional[str]:
    """`${subdir:${paths.data_dir},mnist}`: parent/name, or null when the parent is not configured."""
    return None if parent is None else str(Path(parent) / name)


def register_schemas() -> None:
    """Make the schema available to config.yaml's defaults list as `tfrexp_schema`, and our resolvers."""
    ConfigStore.instance().store(name="tfrexp_schema", node=Config)
    if not OmegaConf.has_resolver("subdir"):
        OmegaConf.register_new_resolver("subdir", _subdir)


def _reject_unknown_keys(node: DictConfig, schema: type, prefix: str) -> None:
    """Hydra's `+key=value` can force a key into a typed node; refuse any key the schema does not name."""
    names = {spec.name: spec for spec in dataclasses.fields(schema)}
    for key in node.keys():
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(names))})")
        child_type = names[key].type
        child_schema = globals().get(child_type) if isinstance(child_type, str) else child_type
        if dataclasses.is_dataclass(child_schema) and isinstance(node._get_node(key), DictConfig):
            _reject_unknown_keys(node._get_node(key), child_schema, f"{prefix}{key}.")


# The configs live in the project's top-level conf/, beside this package (installed editable).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose(*overrides: str) -> DictConfig:
    """The config the entrypoint would get for `overrides`, for code that runs outside `tfrexp`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def to_settings(cfg: DictConfig) -> Config:
    """Resolve the composed config and build the typed settings; raises ConfigError on a bad value."""
    _reject_unknown_keys(cfg, Config, "")
    try:
        settings = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        # Interpolation and conversion problems surface here; carry the key OmegaConf names.
        cause = error.__cause__ if isinstance(error.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(f"{error.full_key or '<config>'}: {error.msg}") from None
    assert isinstance(settings, Config)  # guaranteed by the schema, not user input
    return settings
