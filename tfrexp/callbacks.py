"""Keras callbacks that report training to MLflow."""

from __future__ import annotations

import time

import keras
import mlflow


class EpochMetricsLogger(keras.callbacks.Callback):
    """Logs every metric Keras reports at the end of an epoch, with step = epoch number (1-based),
    plus the epoch's wall time. Errors propagate: a metric that cannot be stored is not silently lost."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        metrics["epoch_seconds"] = time.perf_counter() - self._started
        mlflow.log_metrics(metrics, step=epoch + 1)
