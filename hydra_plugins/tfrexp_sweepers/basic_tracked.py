"""Hydra's basic sweeper (the default of `tfrexp -m`), made to end the sweep's MLflow parent run whatever stops
it: Hydra calls the end-of-sweep callback only after a normal return, so a launcher that cannot start, Ctrl-C
or SIGTERM would leave the parent RUNNING (see tfrexp.tracking.sweep.parent_closed_on_failure). Its jobs get
absolute paths, whatever folder a launcher runs them in (with_absolute_paths)."""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from tfrexp.ray_head import require_launcher_cluster
from tfrexp.tracking.sweep import parent_closed_on_failure, with_absolute_paths


class TrackedBasicSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        with parent_closed_on_failure(self.config):
            require_launcher_cluster(self.config)
            return super().sweep(with_absolute_paths(self.config, arguments))
