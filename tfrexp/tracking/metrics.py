"""Per-step metrics that survive a store that goes away: kept, retried, and written to a file if still unsent."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from tfrexp.tracking.store import TrackingError

log = logging.getLogger(__name__)


class MetricBuffer:
    """Logs metrics; values the store does not take (it went away) are kept and retried with the next call.

    On every way out of a run, `keep()` writes what still did not get through to `path` (nothing is dropped
    silently), and a buffer made for the same run later (trainer.resume=true) sends what that file holds
    first."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._pending: list[tuple[dict[str, float], int]] = []
        self._warned = False
        if path is not None and path.is_file():
            self._pending = [(entry["metrics"], entry["step"]) for entry in json.loads(path.read_text())]
            log.info("sending %d sets of metric values an earlier attempt of this run kept in %s",
                     len(self._pending), path)
            self.keep()

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        self._pending.append((metrics, step))
        self.flush()

    def flush(self) -> None:
        while self._pending:
            metrics, step = self._pending[0]
            try:
                mlflow.log_metrics(metrics, step=step)
            except (MlflowException, OSError) as error:
                if not self._warned:
                    log.warning("the MLflow store does not take metrics (%s); keeping them to retry",
                                str(error).splitlines()[0][:300])
                    self._warned = True
                return
            self._pending.pop(0)

    def unsent(self) -> list[dict]:
        self.flush()
        return [{"step": step, "metrics": metrics} for metrics, step in self._pending]

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
                f"values were not stored; they are in {self.path} (training itself finished; trainer.resume=true "
                "sends them)")
