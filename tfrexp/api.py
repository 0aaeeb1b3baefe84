"""tfrexp from Python or a notebook: the same config, checks and run as the `tfrexp` command, in-process.

    import tfrexp
    result = tfrexp.run(["dataset.max_examples_per_split=2000", "trainer.epochs=1"])
    cfg = tfrexp.compose(["model=mlp"])           # the checked config, nothing run
    train = tfrexp.load_split(result.records_dir, "train")   # our records as a batched tf.data.Dataset

Errors a user can act on are raised as `tfrexp.errors.TfrexpError` (ConfigError, DataError, ...) with the
same one-line message the command prints.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from hydra.errors import HydraException
from omegaconf import DictConfig

from tfrexp import config, run_context
from tfrexp.config.schema import PipelineConfig
from tfrexp.errors import ConfigError
from tfrexp.training.backend import prepare_backend

if TYPE_CHECKING:
    import tensorflow as tf

    from tfrexp.experiment import RunResult


def compose(overrides: Sequence[str] | None = None) -> DictConfig:
    """The config `tfrexp <overrides>` would run, checked (a bad value raises ConfigError)."""
    composed = _compose(overrides)
    run_context.check(composed)
    return composed


def run(overrides: Sequence[str] | None = None) -> RunResult:
    """Run one experiment in this process, as `tfrexp <overrides>` does; returns its RunResult."""
    started = time.perf_counter()  # the run's startup_seconds count from this call
    composed = _compose(overrides, return_hydra_config=True)
    settings, source = run_context.check(composed)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    run_dir = Path(settings.paths.output_dir) / "runs" / f"{stamp}-{os.getpid()}"
    context = run_context.run_context(composed, composed.hydra, settings, run_dir, started)
    prepare_backend(settings.trainer)
    import keras

    from tfrexp import experiment

    keras.backend.clear_session()  # a fresh graph and layer names for every run in this process
    run_dir.mkdir(parents=True, exist_ok=True)
    return experiment.run(settings, source, context)


def _compose(overrides: Sequence[str] | None, return_hydra_config: bool = False) -> DictConfig:
    """Hydra's compose; what Hydra refuses (an unknown option or key, a value of the wrong type) is a
    ConfigError with Hydra's message and, where there is one, its cause's first line."""
    try:
        return run_context.compose(*(overrides or []), return_hydra_config=return_hydra_config)
    except HydraException as error:
        message = str(error).strip()
        if error.__cause__ is not None and str(error.__cause__).strip():
            message += f": {str(error.__cause__).strip().splitlines()[0]}"
        raise ConfigError(message) from None


def load_split(records_dir: str | Path, split: str, batch_size: int | None = None, training: bool = False,
               seed: int = 0, **pipeline: object) -> tf.data.Dataset:
    """A record version's split as our pipeline builds it: batches of (uint8 images, int64 labels).
    `batch_size` and the other `pipeline` settings (cache, parallelism, ...) default as in the config;
    `training=True` shuffles."""
    from tfrexp.pipeline import build_dataset
    from tfrexp.records.manifest import read_manifest

    directory = Path(records_dir)
    if batch_size is not None:
        pipeline["batch_size"] = batch_size
    settings = config.typed(PipelineConfig, pipeline, "pipeline")
    return build_dataset(directory, read_manifest(directory), split, settings, training=training, seed=seed)
