"""How one job's MLflow run is named, tagged and attached to its sweep: `<dataset>-<model>` plus what the
sweep varies, the git state of the user's project, and the sweep file through which the sweep callback tells
every job (in this process or a launcher's worker) its parent run."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode

SWEEP_FILE = "mlflow_sweep.json"


@dataclass(frozen=True)
class JobIdentity:
    """How one job's MLflow run is named, tagged and attached to its sweep."""

    run_name: str
    tags: dict[str, str]
    parent_run_id: str | None


def job_identity(hydra_config: Any, dataset: str, model: str, run_name: str | None) -> JobIdentity:
    """From the job's Hydra config: `<dataset>-<model>` plus the swept overrides, and the tags."""
    overrides = list(hydra_config.overrides.task)
    tags = {"model": model, "hydra.overrides": " ".join(overrides) or "(none)", **git_state()}
    sweep = read_sweep_file(Path(hydra_config.sweep.dir)) if hydra_config.mode == RunMode.MULTIRUN else None
    if sweep is None:
        return JobIdentity(run_name or f"{dataset}-{model}", tags, None)
    name = "-".join([dataset, model, *_swept_values(overrides, sweep["swept_keys"])])
    tags.update({"sweep.id": sweep["sweep_id"], "sweep.job": str(hydra_config.job.num)})
    return JobIdentity(run_name or name, tags, sweep["parent_run_id"])


def sweep_overrides(overrides: list[str]) -> list[Override]:
    """The overrides that sweep (`a=1,2`, `range(...)`, `choice(...)`), parsed by Hydra's own parser."""
    return [override for override in OverridesParser.create().parse_overrides(overrides)
            if override.is_sweep_override()]


def parent_run_name(dataset: str, model: str, overrides: list[str], sweep_id: str) -> str:
    """`sweep-<dataset>-<model>-<sweep id>`; a swept dataset or model shows its choices (`cnn_small,cnn`), since
    the sweep's own config holds only the default option of a swept group."""
    chosen = {"dataset": dataset, "model": model}
    for override in sweep_overrides(overrides):
        if override.key_or_group in chosen:
            chosen[override.key_or_group] = ",".join(override.sweep_string_iterator())
    return f"sweep-{chosen['dataset']}-{chosen['model']}-{sweep_id}"


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


# Short names for the keys people sweep most; any other key is named by its last part (`model.dropout` ->
# `dropout`), or in full when two swept keys end alike.
SHORT_KEYS = {"learning_rate": "lr", "batch_size": "batch"}
# Choices the name already starts with (`<dataset>-<model>`), so a sweep over them adds nothing more.
NAMED_GROUPS = {"dataset", "model"}


def _swept_values(overrides: list[str], swept_keys: list[str]) -> list[str]:
    """The job's value of every swept key, once each: `trainer.learning_rate=0.003` -> `lr=0.003`."""
    keys = [key for key in swept_keys if key not in NAMED_GROUPS]
    tails = [key.rsplit(".", 1)[-1] for key in keys]
    labels = {key: key if tails.count(tail) > 1 else SHORT_KEYS.get(tail, tail) for key, tail in zip(keys, tails)}
    parts = []
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in labels:
            parts.append(f"{labels[key]}={_readable(value)}")
    return parts


def _readable(value: str) -> str:
    """A search's floats in three significant digits (`0.0009994009578919113` -> `0.000999`); the exact
    values are the run's params."""
    if "." not in value and "e" not in value.lower():
        return value
    try:
        return f"{float(value):.3g}"
    except ValueError:
        return value


def read_sweep_file(sweep_dir: Path) -> dict | None:
    path = sweep_dir / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None
