"""From a composed config to what one run needs: the typed settings, the source, and the run's context (its
name and tags, the resolved config it logs, its folder, when it started).

Shared by the `tfrexp` command and the Python API. No TensorFlow here: a bad config is refused before
TensorFlow is imported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tfrexp import config, sources
from tfrexp.config.schema import Config
from tfrexp.records.examples import ExampleSource
from tfrexp.tracking.names import JobIdentity, job_identity
from tfrexp.training import devices


@dataclass(frozen=True)
class RunContext:
    """What the entrypoint knows beyond the settings: names, the resolved config, where to put scratch."""

    resolved_config: dict
    config_yaml: str
    identity: JobIdentity  # run name, tags, parent run of a sweep
    run_dir: Path
    started: float  # when the job (see job_start) or the call (the API) started, on time.perf_counter()


def process_start() -> float:
    """When this process started, on the time.perf_counter() clock (Python's own start-up included)."""
    return time.perf_counter() - (time.time() - psutil.Process().create_time())


_began_a_job = False  # whether this process has begun a job: a serial sweep or a joblib worker runs several


def job_start() -> float:
    """When this job began, on the time.perf_counter() clock: the process's start for its first job (Python's
    and TensorFlow's start-up are that job's to pay), now for each later job of the same process."""
    global _began_a_job
    if _began_a_job:
        return time.perf_counter()
    _began_a_job = True
    return process_start()


def register_schemas() -> None:
    """Everything Hydra types the config tree with: the groups' schema and the built-in source kinds. Called
    when an app starts (the command's main, the API's compose), before Hydra composes."""
    config.register_schemas()
    sources.register_schemas()
    devices.register_resolver()  # the Ray launcher's GPUs per task


def compose(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """The config the `tfrexp` command would get for `overrides`, through Hydra's compose API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schemas()
    with initialize_config_dir(config_dir=config.CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def task_config(composed: DictConfig) -> DictConfig:
    """The config without its `hydra` node: what Hydra hands the task function."""
    if "hydra" not in composed:
        return composed
    task = composed.copy()
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def check(composed: DictConfig) -> tuple[Config, ExampleSource]:
    """Typed settings and the source; a ConfigError names the first bad key and value."""
    settings = config.to_settings(task_config(composed))
    return settings, sources.build(settings.dataset)


def run_context(composed: DictConfig, hydra_config: Any, settings: Config, run_dir: Path,
                started: float) -> RunContext:
    """The run's context from the job's config and its Hydra config (sweep membership, overrides, model)."""
    task = task_config(composed)
    model_name = hydra_config.runtime.choices.get("model") or "model"
    return RunContext(
        resolved_config=OmegaConf.to_container(task, resolve=True, enum_to_str=True),
        config_yaml=OmegaConf.to_yaml(task, resolve=True),
        identity=job_identity(hydra_config, settings.dataset.name, model_name, settings.tracking.run_name),
        run_dir=run_dir,
        started=started,
    )
