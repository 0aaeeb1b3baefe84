"""What a finished sweep logs on its parent run: `sweep_summary.csv` (one row per child) and
`sweep_objective.png` (the objective against each swept key, one panel per key)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def summary_rows(children: list[Any], swept_keys: list[str], objective: str) -> list[dict]:
    """One row per child run (MLflow `Run`s): id, name, status, duration, swept values, objective, test metrics,
    and the error of a failed one."""
    rows = []
    for run in sorted(children, key=lambda run: run.info.start_time or 0):
        end = run.info.end_time or run.info.start_time
        row = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
               "duration_s": round((end - run.info.start_time) / 1000, 1) if run.info.start_time else None}
        row.update({key: _swept_value(run, key) for key in swept_keys})
        row[objective] = run.data.metrics.get(objective)
        if "search.pruned" in run.data.tags:  # a search's trial: the epoch after which its pruner stopped it
            row["pruned_at_epoch"] = _int(run.data.params.get("search.pruned_at_epoch"))
        row.update({name: value for name, value in sorted(run.data.metrics.items()) if name.startswith("test_")})
        row["error"] = run.data.tags.get("error", "")  # why a job failed (or was refused), in one line
        rows.append(row)
    return rows


def _swept_value(run: Any, key: str) -> str | None:
    """A swept key's value: the param of that name, or for a group (`model`) the option the job chose."""
    if key in run.data.params:
        return run.data.params[key]
    for override in run.data.tags.get("hydra.overrides", "").split():
        name, _, value = override.lstrip("+~").partition("=")
        if name == key:
            return value
    return None


def to_csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(column for row in rows for column in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def objective_figure(rows: list[dict], swept_keys: list[str], objective: str) -> Figure:
    """The objective of every finished child against each swept key; numbers on a (log) axis, else categories."""
    figure, axes = plt.subplots(1, max(1, len(swept_keys)), figsize=(4.5 * max(1, len(swept_keys)), 3.6),
                                squeeze=False)
    for axis, key in zip(axes[0], swept_keys or [""]):
        finished = [row for row in rows if row["status"] == "FINISHED" and row.get(objective) is not None
                    and not math.isnan(row[objective])]
        values = [row.get(key) for row in finished]
        numbers = [_number(value) for value in values]
        if finished and all(number is not None for number in numbers):
            positions = numbers
            if min(numbers) > 0 and max(numbers) / min(numbers) >= 100:
                axis.set_xscale("log")
        else:
            categories = sorted({str(value) for value in values})
            positions = [categories.index(str(value)) for value in values]
            axis.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        pruned = [row.get("pruned_at_epoch") is not None for row in finished]
        for is_pruned, style in ((False, {"label": "trained to the end"}),
                                 (True, {"label": "pruned (its last epoch)", "facecolors": "none",
                                         "edgecolors": "grey"})):
            chosen = [index for index, flag in enumerate(pruned) if flag == is_pruned]
            if chosen:
                axis.scatter([positions[index] for index in chosen], [finished[index][objective] for index in chosen],
                             **style)
        if any(pruned):
            axis.legend(fontsize="small")
        axis.set_xlabel(key)
        axis.set_ylabel(objective)
        axis.grid(alpha=0.3)
    figure.suptitle(f"{objective} of each finished job")
    figure.tight_layout()
    return figure


def _int(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
