"""From a composed config to what one run needs: checked settings, the source, names and folders.

Shared by the `tfrexp` command and the Python API. No TensorFlow here: a bad config is refused before
TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tfrexp import config, sources
from tfrexp.config.schema import Backend, Config, TrainerConfig
from tfrexp.errors import ConfigError
from tfrexp.records.examples import ExampleSource
from tfrexp.run_identity import JobIdentity, job_identity


@dataclass(frozen=True)
class RunContext:
    """What the entrypoint knows beyond the settings: names, the resolved config, where to put scratch."""

    resolved_config: dict
    config_yaml: str
    identity: JobIdentity  # run name, tags, parent run of a sweep
    run_dir: Path


def register_schemas() -> None:
    """Everything Hydra types the config tree with: the groups' schema and the built-in source kinds."""
    config.register_schemas()
    sources.register_schemas()


def compose(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """The config the `tfrexp` command would get for `overrides`, through Hydra's compose API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schemas()
    with initialize_config_dir(config_dir=config.CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def task_config(cfg: DictConfig) -> DictConfig:
    """The config without its `hydra` node: what Hydra hands the task function."""
    if "hydra" not in cfg:
        return cfg
    task = cfg.copy()
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def check(cfg: DictConfig) -> tuple[Config, ExampleSource]:
    """Typed settings and the source; a ConfigError names the first bad key and value."""
    settings = config.to_settings(task_config(cfg))
    return settings, sources.build(settings.dataset)


def prepare_backend(trainer: TrainerConfig) -> None:
    """Import TensorFlow and Keras with the configured Keras backend. TensorFlow's C++ start-up lines
    (`cuInit ... UNKNOWN ERROR` on a machine without a GPU, oneDNN and CUDA-stub notices) are kept out of the
    output unless trainer.backend_logs is true: TF_CPP_MIN_LOG_LEVEL=3 (a value of the user's own wins)
    silences what TensorFlow logs once running, and what its libraries print while loading, which that
    setting no longer reaches, is held back (and shown if the import fails)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if trainer.backend_logs else "3")
    loaded = sys.modules.get("keras")
    if loaded is not None:
        current = loaded.backend.backend()
        if current != trainer.backend.value:
            raise ConfigError(f"trainer.backend={trainer.backend.value!r}: Keras is already loaded with the "
                              f"{current} backend in this process; start a new one")
        return
    if trainer.backend is Backend.jax and importlib.util.find_spec("jax") is None:
        raise ConfigError("trainer.backend='jax': JAX is not installed (pip install 'tfrexp[jax]')")
    os.environ["KERAS_BACKEND"] = trainer.backend.value
    with contextlib.nullcontext() if trainer.backend_logs else _native_stderr_held():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """File descriptor 2 into a temporary file for the block (C++ libraries write there, not to sys.stderr);
    what was written is shown after all if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def context(task_cfg: DictConfig, hydra_cfg: Any, settings: Config, run_dir: Path) -> RunContext:
    """The run's context from the job's Hydra config (sweep membership, overrides, chosen model)."""
    model_name = hydra_cfg.runtime.choices.get("model") or "model"
    return RunContext(
        resolved_config=OmegaConf.to_container(task_cfg, resolve=True, enum_to_str=True),
        config_yaml=OmegaConf.to_yaml(task_cfg, resolve=True),
        identity=job_identity(hydra_cfg, settings.dataset.name, model_name, settings.tracking.run_name),
        run_dir=run_dir,
    )
