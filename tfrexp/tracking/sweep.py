"""Sweeps as MLflow parent and child runs.

`SweepCallback` (a Hydra callback, see conf/config.yaml) opens the parent run before the first job and
writes its id into the sweep folder, where every job, in this process or in a joblib worker, finds it.
When the sweep ends, the parent gets the best child's objective and run id. MLflow is imported only
when a sweep starts: Hydra makes this callback for every run, also one whose config is then refused.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tfrexp import stop_signals
from tfrexp.config.schema import TrackingConfig
from tfrexp.errors import exit_with_error, first_line
from tfrexp.tracking.names import (
    SWEEP_FILE,
    git_state,
    job_identity,
    parent_run_name,
    read_sweep_file,
    sweep_overrides,
)

ENDED_SWEEP_FILE = "mlflow_sweep.ended.json"

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Opens the sweep's parent run in MLflow, and closes it with the best child's result.

    Hydra turns an exception in a callback into a warning and goes on, so both ends are guarded here: a
    sweep whose parent run cannot be made stops before any job, in one line (SystemExit gets through), and
    a parent run always ends, FAILED with the reason if summing up the sweep fails."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._open_parent(config)
        except Exception as error:  # noqa: BLE001 -- every cause ends the sweep the same way
            reason = first_line(error)
            exit_with_error(f"the sweep cannot start: {reason}")

    def _open_parent(self, config: DictConfig) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        claim = sweep_dir / SWEEP_FILE
        try:  # claimed before the parent exists: two sweeps in one folder would end each other's parent run
            claim.open("x").close()
        except FileExistsError:
            raise RuntimeError(f"hydra.sweep.dir={str(sweep_dir)!r} holds a running sweep ({SWEEP_FILE}; delete it "
                               f"if that sweep was killed), give this one a folder of its own") from None
        try:
            self._make_parent(config, sweep_dir)
        except BaseException:
            claim.unlink()  # the folder stays free for the same command once the cause is fixed
            raise

    @staticmethod
    def _make_parent(config: DictConfig, sweep_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        from tfrexp.tracking.store import connect

        settings = _tracking_settings(config)
        experiment_id = connect(settings)
        overrides = list(config.hydra.overrides.task)
        sweep_id = sweep_dir.name
        swept = sorted(_swept_keys(overrides, config))
        dataset, model = config.dataset.name, config.hydra.runtime.choices.get("model", "model")
        client = MlflowClient(settings.uri)
        parent = client.create_run(
            experiment_id,
            run_name=parent_run_name(dataset, model, overrides, sweep_id),
            tags={"sweep.id": sweep_id, "sweep.role": "parent", "hydra.overrides": " ".join(overrides),
                  **git_state()},
        )
        client.log_param(parent.info.run_id, "sweep.overrides", " ".join(overrides))
        client.log_param(parent.info.run_id, "sweep.swept_keys", ",".join(swept))
        client.log_param(parent.info.run_id, "trainer.objective", config.trainer.objective)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps({
            "parent_run_id": parent.info.run_id, "experiment_id": experiment_id,
            "sweep_id": sweep_id, "swept_keys": swept, "tracking_uri": absolute_store_uri(settings.uri),
        }))
        log.info("sweep %s: MLflow parent run %s", sweep_id, parent.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failure = end_sweep(config)
        if failure:  # a sweep none of whose jobs finished has failed, and its exit status says so
            exit_with_error(failure)


@contextmanager
def parent_closed_on_failure(config: DictConfig) -> Iterator[None]:
    """Around a sweeper's `sweep`: Hydra calls the end-of-sweep callback only after a normal return, so
    whatever else ends a sweep (a launcher that cannot start, a search whose every trial failed, Ctrl-C,
    SIGTERM) ends its parent run here, FAILED with the reason or KILLED, frees the sweep folder, and ends the
    command in one line (exit 2, or 130 when interrupted)."""
    with stop_signals.handled((signal.SIGINT, signal.SIGTERM), _interrupt):
        try:
            yield
            stop_signals.raise_if_received()  # its first exception was dropped (see tfrexp.stop_signals)
        except KeyboardInterrupt as interrupted:
            end_sweep(config, interrupted)
            print("tfrexp: the sweep was interrupted: its parent run and the jobs that were running ended KILLED",
                  file=sys.stderr)
            sys.exit(130)
        except Exception as error:  # noqa: BLE001 -- every cause ends the parent the same way
            exit_with_error(end_sweep(config, error))


def with_absolute_paths(config: DictConfig, arguments: list[str]) -> list[str]:
    """The sweep's overrides, with every path (paths.output_dir, paths.data_dir, hydra.sweep.dir) pinned to its
    absolute value here, in the driver, and a SQLite tracking.uri that is relative made absolute: a launcher's
    jobs may run in another folder and environment (a Ray worker starts in its head's), where a relative path
    names another store and sweep folder, TFREXP_OUTPUT_DIR and TFREXP_DATA_DIR are the head's (or unset), and
    the sweep folder's `${now:...}` is another time."""
    swept = {override.key_or_group for override in sweep_overrides(arguments)}
    absolute = {}
    for key in ("paths.output_dir", "paths.data_dir", "hydra.sweep.dir"):
        value = OmegaConf.select(config, key)
        if value is not None and key not in swept:
            absolute[key] = value if Path(value).is_absolute() else str(Path(value).resolve())
    uri = absolute_store_uri(str(config.tracking.uri))
    # The default, sqlite:///${paths.output_dir}/mlflow.db, follows paths.output_dir; a URI given as is may not.
    if uri != config.tracking.uri and "tracking.uri" not in swept and not OmegaConf.is_interpolation(config.tracking,
                                                                                                      "uri"):
        absolute["tracking.uri"] = uri
    kept = [argument for argument in arguments if argument.split("=", 1)[0].lstrip("+~") not in absolute]
    return kept + [f"{key}={value}" for key, value in absolute.items()]


def absolute_store_uri(uri: str) -> str:
    """sqlite:///relative/path -> sqlite:////its/absolute/path; any other URI as it is."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def _interrupt(signum: int, frame: object) -> None:
    stop_signals.interrupt(signum)


@stop_signals.deferred()
def end_sweep(config: DictConfig, raised: BaseException | None = None) -> str | None:
    """End the parent run of the sweep in `hydra.sweep.dir` (if still open) with the sweep's outcome, `raised`
    being what stopped the sweeper if anything did, and free the folder. Returns the sweep's failure in one
    line (none of its jobs finished, or what raised), or None."""
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep = read_sweep_file(sweep_dir)
    if sweep is None:
        return _reason(raised) if raised is not None else None
    try:
        return _close_parent(config, sweep, raised)
    finally:  # kept for the record, under a name that frees the folder for a later sweep
        (sweep_dir / SWEEP_FILE).replace(sweep_dir / ENDED_SWEEP_FILE)


def _reason(error: BaseException) -> str:
    """What stopped a sweeper, with its type: `ConnectionError: no Ray cluster ...`."""
    name, text = type(error).__name__, first_line(error)
    return text if text == name else f"{name}: {text}"


def _close_parent(config: DictConfig, sweep: dict, raised: BaseException | None) -> str | None:
    from mlflow.tracking import MlflowClient

    client, parent_id = MlflowClient(_tracking_settings(config).uri), sweep["parent_run_id"]
    summing_up = None
    try:
        children, scored = _sum_up(config, sweep, client)
    except Exception as error:  # noqa: BLE001 -- whatever failed, the parent must not stay RUNNING
        log.error("sweep %s: summing up failed: %s", sweep["sweep_id"], error)
        children, scored, summing_up = [], [], f"summing up the sweep failed: {error}"
    stopped = isinstance(raised, KeyboardInterrupt)
    if raised is None and summing_up is None and (scored or not children):  # a sweep with no job (a search already complete) is fine
        status, error, failure = "FINISHED", None, None
    elif children and not scored and not stopped:
        error = f"none of the {len(children)} jobs finished"
        reasons = [run.data.tags["error"] for run in sorted(children, key=lambda run: run.info.start_time or 0)
                   if run.data.tags.get("error")]
        status, failure = "FAILED", (
            f"sweep {sweep['sweep_id']}: none of its {len(children)} jobs finished with {config.trainer.objective}"
            + (f" (the first: {reasons[0].splitlines()[0]})" if reasons else "")
            + "; each job's reason is in the parent run's sweep_summary.csv")
    else:
        status = "KILLED" if stopped else "FAILED"
        error = "interrupted" if stopped else f"the sweep stopped: {_reason(raised)}" if raised else summing_up
        failure = f"sweep {sweep['sweep_id']}: {error}"
    try:
        if error:
            client.set_tag(parent_id, "error", error[:5000])
        client.set_terminated(parent_id, status)
        if raised is not None:
            _end_orphans(client, children, status, error)
    except Exception as store_error:  # noqa: BLE001 -- the store itself is gone: say so, nothing more
        log.error("sweep %s: could not mark the parent run %s: %s", sweep["sweep_id"], status, store_error)
    return failure


def _end_orphans(client: Any, children: list, status: str, error: str) -> None:
    """Jobs still RUNNING when the sweep stopped: a job in this process ended its own run, but one in another
    process (a Ray worker, which the driver's signal does not reach) cannot; it ends as the parent did."""
    for run in children:
        if client.get_run(run.info.run_id).info.status == "RUNNING":
            client.set_tag(run.info.run_id, "error", f"the sweep ended before this job: {error}"[:5000])
            client.set_terminated(run.info.run_id, status)


def _sum_up(config: DictConfig, sweep: dict, client: Any) -> tuple[list, list]:
    """The parent's summary metrics and best child; returns the children and the scored ones."""
    from tfrexp.tracking.store import children as child_runs

    objective, direction = config.trainer.objective, config.trainer.objective_direction
    children = child_runs(_tracking_settings(config).uri, sweep["experiment_id"], sweep["parent_run_id"])
    scored = [
        (run.data.metrics[objective], run.info.run_id, run.data.tags.get("search.pruned") == "true")
        for run in children
        if run.info.status == "FINISHED" and not math.isnan(run.data.metrics.get(objective, math.nan))
    ]
    trained_out = [(value, run_id) for value, run_id, pruned in scored if not pruned]  # pruned: not a candidate
    parent_id = sweep["parent_run_id"]
    client.log_metric(parent_id, "sweep.children", len(children))
    client.log_metric(parent_id, "sweep.finished", len(scored))
    if len(trained_out) < len(scored):
        client.log_metric(parent_id, "sweep.pruned", len(scored) - len(trained_out))
    _log_summary(client, parent_id, children, list(sweep["swept_keys"]), objective)
    if trained_out:
        value, best_run_id = (max if direction == "max" else min)(trained_out)
        client.log_metric(parent_id, f"best_{objective}", value)
        client.set_tag(parent_id, "best_run_id", best_run_id)
        client.set_tag(parent_id, "best_run_name", client.get_run(best_run_id).info.run_name)
        log.info("sweep %s: best %s=%.4f in run %s", sweep["sweep_id"], objective, value, best_run_id)
    return children, scored


def _log_summary(client: Any, parent_id: str, children: list, swept_keys: list[str], objective: str) -> None:
    """`sweep_summary.csv` (one row per child, failed ones included) and `sweep_objective.png` on the parent."""
    import matplotlib.pyplot as plt

    from tfrexp.tracking import sweep_summary

    rows = sweep_summary.summary_rows(children, swept_keys, objective)
    client.log_text(parent_id, sweep_summary.to_csv(rows), "sweep_summary.csv")
    figure = sweep_summary.objective_figure(rows, swept_keys, objective)
    client.log_figure(parent_id, figure, "sweep_objective.png")
    plt.close(figure)


@stop_signals.deferred()
def record_refused_job(hydra_config: Any, composed: DictConfig, reason: str) -> None:
    """A job of a sweep whose config was refused before its run began becomes a FAILED child run with the
    reason, so that the sweep counts it and its parent's summary shows why. Nothing outside a sweep."""
    sweep = read_sweep_file(Path(hydra_config.sweep.dir))
    if sweep is None or "tracking_uri" not in sweep:
        return
    from mlflow.tracking import MlflowClient

    dataset = OmegaConf.select(composed, "dataset.name", default=None, throw_on_resolution_failure=False)
    model = hydra_config.runtime.choices.get("model") or "model"
    identity = job_identity(hydra_config, str(dataset or "dataset"), model, None)
    try:
        client = MlflowClient(sweep["tracking_uri"])
        run = client.create_run(sweep["experiment_id"], run_name=identity.run_name,
                                tags={**identity.tags, "mlflow.parentRunId": sweep["parent_run_id"],
                                      "error": reason[:5000]})
        client.log_text(run.info.run_id, reason, "error.txt")
        client.set_terminated(run.info.run_id, "FAILED")
    except Exception as error:  # noqa: BLE001 -- the refusal is what the user must see; the store's trouble is logged
        log.warning("sweep %s: could not record the refused job %s: %s", sweep["sweep_id"],
                    identity.tags.get("sweep.job"), error)


def _tracking_settings(config: DictConfig) -> TrackingConfig:
    # Resolved in place, so interpolations such as ${paths.output_dir} still see the whole config.
    return TrackingConfig(**OmegaConf.to_container(config.tracking, resolve=True))


def _swept_keys(overrides: list[str], config: DictConfig) -> set[str]:
    """Keys the sweep varies: sweep syntax on the command line (a,b / range / choice), or a search space."""
    keys = {override.key_or_group for override in sweep_overrides(overrides)}
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return keys | set(params)
