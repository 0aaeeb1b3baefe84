"""Hydra's basic sweeper (the default of `tfrexp -m`), made to end the sweep's MLflow parent run whatever stops
it: Hydra calls the end-of-sweep callback only after a normal return, so a launcher that cannot start, Ctrl-C
or SIGTERM would leave the parent RUNNING (see tfrexp.tracking.sweep.parent_closed_on_failure). Its jobs get
absolute paths, whatever folder a launcher runs them in (with_absolute_paths). With the basic launcher each
job's config is composed once, not twice (ComposedOnce)."""

from __future__ import annotations

from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from tfrexp.ray_head import require_launcher_cluster
from tfrexp.tracking.sweep import parent_closed_on_failure, with_absolute_paths

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class TrackedBasicSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if config.hydra.launcher.get("_target_") == BASIC_LAUNCHER:
            hydra_context = HydraContext(config_loader=ComposedOnce(hydra_context.config_loader),
                                         callbacks=hydra_context.callbacks)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        loader = self.hydra_context.config_loader
        if not isinstance(loader, ComposedOnce):
            return super().validate_batch_is_legal(batch)
        for overrides in batch:
            loader.compose_and_keep(self.config, overrides)

    def sweep(self, arguments: list[str]) -> Any:
        with parent_closed_on_failure(self.config):
            require_launcher_cluster(self.config)
            return super().sweep(with_absolute_paths(self.config, arguments))


class ComposedOnce:
    """Hydra's config loader, keeping each job's config from the sweeper's check of a batch until the launcher
    asks for it. The sweeper composes every job of a batch before any runs, so that a bad override stops the
    sweep before it starts (`validate_batch_is_legal`); the basic launcher then composes each job again, in
    the same process, from the same config and overrides: 89 ms a job with this project's config groups
    (measured 2026-12-06). Only for the basic launcher: another one pickles the loader to other processes,
    where nothing would take the kept configs. At most KEEP_AT_MOST are kept at a time (a composed config
    holds about 210 KiB, and a whole sweep is one batch by default); later jobs are composed again."""

    KEEP_AT_MOST = 100

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def compose_and_keep(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> None:
        composed = self._loader.load_sweep_config(master_config, list(sweep_overrides))
        if len(self._kept) < self.KEEP_AT_MOST:
            self._kept[(id(master_config), tuple(sweep_overrides))] = composed

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> DictConfig:
        kept = self._kept.pop((id(master_config), tuple(sweep_overrides)), None)
        if kept is not None:  # taken once: the launcher sets the job's id and number on it
            return kept
        return self._loader.load_sweep_config(master_config, list(sweep_overrides))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # a copy being built has no _loader yet: no endless lookup of it
            raise AttributeError(name)
        return getattr(self._loader, name)
