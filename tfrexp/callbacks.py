"""Keras callbacks that report training to MLflow."""

from __future__ import annotations

import logging
import math
import time

import keras
import mlflow

import tfrexp
from tfrexp.errors import TrainingDiverged

log = logging.getLogger(__name__)


class EpochMetricsLogger(keras.callbacks.Callback):
    """Logs every metric Keras reports at the end of an epoch, with step = epoch number (1-based),
    plus the epoch's wall time and throughput. Errors propagate: a metric that cannot be stored is not
    silently lost."""

    def __init__(self, examples_per_epoch: int) -> None:
        super().__init__()
        self.examples_per_epoch = examples_per_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch == 0 and not getattr(self, "_first_step_seen", False):
            self._first_step_seen = True
            log.info("first training step done, %.1f s after start-up", time.perf_counter() - tfrexp.STARTED)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        seconds = time.perf_counter() - self._started
        metrics["epoch_seconds"] = seconds
        metrics["examples_per_second"] = self.examples_per_epoch / seconds
        mlflow.log_metrics(metrics, step=epoch + 1)


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, with the reason as the error."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"training diverged: loss is {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1}; "
                "lower trainer.learning_rate"
            )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
