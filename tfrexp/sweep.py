"""Sweeps as MLflow parent and child runs, and the names and tags each job's run gets.

`SweepCallback` (a Hydra callback, see conf/config.yaml) opens the parent run before the first job and
writes its id into the sweep folder, where every job, in this process or in a joblib worker, finds it.
When the sweep ends, the parent gets the best child's objective and run id.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from tfrexp import tracking
from tfrexp.config.schema import TrackingConfig
from tfrexp.job import JobIdentity

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"


def job_identity(hydra_cfg: Any, dataset: str, model: str, run_name: str | None) -> JobIdentity:
    """From the job's Hydra config: `<dataset>-<model>` plus the swept overrides, and the tags."""
    overrides = list(hydra_cfg.overrides.task)
    tags = {"model": model, "hydra.overrides": " ".join(overrides) or "(none)", **git_state()}
    sweep = _read_sweep_file(Path(hydra_cfg.sweep.dir)) if hydra_cfg.mode == RunMode.MULTIRUN else None
    if sweep is None:
        return JobIdentity(run_name or f"{dataset}-{model}", tags, None)
    swept = set(sweep["swept_keys"])
    varying = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    name = "-".join([dataset, model, *(_short(o) for o in varying)])
    tags.update({"sweep.id": sweep["sweep_id"], "sweep.job": str(hydra_cfg.job.num)})
    return JobIdentity(run_name or name, tags, sweep["parent_run_id"])


def git_state(folder: Path | None = None) -> dict[str, str]:
    """The commit of the user's project (the git work tree tfrexp is started in, where their conf/ lives)
    and whether the working tree differs from it; "unknown" outside a git work tree."""
    folder = folder or Path.cwd()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(bool(status.strip())).lower()}


class SweepCallback(Callback):
    """Opens the sweep's parent run in MLflow, and closes it with the best child's result."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = _tracking_settings(config)
        experiment_id = tracking.connect(settings)
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = list(config.hydra.overrides.task)
        sweep_id = sweep_dir.name
        swept = sorted(_swept_keys(overrides, config))
        dataset, model = config.dataset.name, config.hydra.runtime.choices.get("model", "model")
        client = MlflowClient(settings.uri)
        parent = client.create_run(
            experiment_id,
            run_name=f"sweep-{dataset}-{model}-{sweep_id}",
            tags={"sweep.id": sweep_id, "sweep.role": "parent", "hydra.overrides": " ".join(overrides),
                  **git_state()},
        )
        client.log_param(parent.info.run_id, "sweep.overrides", " ".join(overrides))
        client.log_param(parent.info.run_id, "sweep.swept_keys", ",".join(swept))
        client.log_param(parent.info.run_id, "trainer.objective", config.trainer.objective)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps({
            "parent_run_id": parent.info.run_id, "experiment_id": experiment_id,
            "sweep_id": sweep_id, "swept_keys": swept,
        }))
        log.info("sweep %s: MLflow parent run %s", sweep_id, parent.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = _read_sweep_file(Path(config.hydra.sweep.dir))
        if sweep is None:
            return
        client = MlflowClient(_tracking_settings(config).uri)
        objective, direction = config.trainer.objective, config.trainer.objective_direction
        children = client.search_runs(
            [sweep["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{sweep['parent_run_id']}'"
        )
        scored = [
            (run.data.metrics[objective], run.info.run_id)
            for run in children
            if run.info.status == "FINISHED" and not math.isnan(run.data.metrics.get(objective, math.nan))
        ]
        parent_id = sweep["parent_run_id"]
        client.log_metric(parent_id, "sweep.children", len(children))
        client.log_metric(parent_id, "sweep.finished", len(scored))
        if scored:
            value, best_run_id = (max if direction == "max" else min)(scored)
            client.log_metric(parent_id, f"best_{objective}", value)
            client.set_tag(parent_id, "best_run_id", best_run_id)
            client.set_tag(parent_id, "best_run_name", client.get_run(best_run_id).info.run_name)
            log.info("sweep %s: best %s=%.4f in run %s", sweep["sweep_id"], objective, value, best_run_id)
        client.set_terminated(parent_id, "FINISHED" if scored else "FAILED")


def _tracking_settings(config: DictConfig) -> TrackingConfig:
    # Resolved in place, so interpolations such as ${paths.output_dir} still see the whole config.
    return TrackingConfig(**OmegaConf.to_container(config.tracking, resolve=True))


def _swept_keys(overrides: list[str], config: DictConfig) -> set[str]:
    """Keys the sweep varies: sweep syntax on the command line (a,b / range / choice), or a search space."""
    keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()}
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return keys | set(params)


def _short(override: str) -> str:
    """trainer.learning_rate=0.003 -> learning_rate=0.003."""
    key, _, value = override.partition("=")
    return f"{key.rsplit('.', 1)[-1]}={value}"


def _read_sweep_file(sweep_dir: Path) -> dict | None:
    path = sweep_dir / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None
