"""Per-step metrics that survive a store that goes away: kept, retried, written to a file if still unsent, and
sent from there by the next run against the same store."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from tfrexp import stop_signals
from tfrexp.errors import first_line
from tfrexp.tracking.store import TrackingError

log = logging.getLogger(__name__)


UNSENT_FILE = "unsent_metrics.json"  # in <unsent folder>/<run id>/


class MetricBuffer:
    """Logs metrics; values the store does not take (it went away) are kept and retried with the next call.

    On every way out of a run, `keep()` writes what still did not get through to `path` (nothing is dropped
    silently); `send_unsent` sends it once the store is back."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._pending: list[tuple[dict[str, float], int]] = []
        self._warned = False

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        self._pending.append((metrics, step))
        self.flush()

    @stop_signals.deferred()
    def flush(self) -> None:
        while self._pending:
            metrics, step = self._pending[0]
            try:
                mlflow.log_metrics(metrics, step=step)
            except (MlflowException, OSError) as error:
                if not self._warned:
                    log.warning("the MLflow store does not take metrics (%s); keeping them to retry",
                                first_line(error)[:300])
                    self._warned = True
                return
            self._pending.pop(0)

    def unsent(self) -> list[dict]:
        self.flush()
        return [{"step": step, "metrics": metrics} for metrics, step in self._pending]

    @stop_signals.deferred()  # a signal during the retry is raised after the file is written, not before
    def keep(self) -> list[dict]:
        """Retry once more, then write what is still unsent to `path` (and remove a file that is all sent)."""
        unsent = self.unsent()
        if self.path is not None:
            if unsent:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps(unsent, indent=2))
            else:
                self.path.unlink(missing_ok=True)
        return unsent

    def give_up(self, tracking_uri: str) -> None:
        """Raise if some values never reached the store, after writing them to `path`."""
        unsent = self.keep()
        if unsent:
            raise TrackingError(
                f"the MLflow store {tracking_uri} stopped answering during the run: {len(unsent)} sets of metric "
                f"values were not stored; they are in {self.path} (training itself finished; the next run against "
                "this store sends them)")


def send_unsent(unsent_dir: Path, tracking_uri: str) -> None:
    """Send what earlier runs kept in `<unsent_dir>/<run id>/unsent_metrics.json` to those runs, each value once
    (one the store took as it died is not sent again), then remove the file. A run the store could not end (it
    went away first) is still RUNNING: it ends FAILED, saying so. A file whose run this store does not know
    (another tracking.uri) is left for a run against that store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for path in sorted(unsent_dir.glob(f"*/{UNSENT_FILE}")):
        run_id = path.parent.name
        try:
            run = client.get_run(run_id)
        except MlflowException:
            log.info("%s: run %s is not in %s; kept for a run against its own store", path, run_id, tracking_uri)
            continue
        entries = json.loads(path.read_text())
        stored = {key: {point.step for point in client.get_metric_history(run_id, key)}
                  for key in {key for entry in entries for key in entry["metrics"]}}
        for entry in entries:
            values = {key: value for key, value in entry["metrics"].items() if entry["step"] not in stored[key]}
            if values:
                client.log_batch(run_id, metrics=[Metric(key, value, int(time.time() * 1000), entry["step"])
                                                  for key, value in values.items()])
        if run.info.status == "RUNNING":
            client.set_tag(run_id, "error", "the tracking store went away before this run could end; its unsent "
                                            "metrics were sent by a later run")
            client.set_terminated(run_id, "FAILED")
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
        log.info("sent the %d sets of metric values run %s kept in %s", len(entries), run_id, path)
