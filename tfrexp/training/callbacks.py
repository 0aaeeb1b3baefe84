"""Keras callbacks around training: per-epoch metrics to MLflow, divergence, signals, and their order."""

from __future__ import annotations

import logging
import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import keras

from tfrexp import stop_signals
from tfrexp.errors import TrainingDiverged
from tfrexp.pipeline import ReadyTimes

if TYPE_CHECKING:
    from tfrexp.tracking.metrics import MetricBuffer

log = logging.getLogger(__name__)


def training_callbacks(interrupts: Interrupts, logger: EpochMetricsLogger, backup_dir: Path,
                       resumed_loss: float | None = None) -> list:
    """The callbacks of `fit`, in the order that is the run's contract. Keras calls them in list order:

    1. stop at the first batch whose loss is not finite or has exploded (against `resumed_loss`, the last
       epoch's loss of a resumed run), before anything of that batch is logged;
    2. stop at the end of a batch if a signal was received but did not stop the run (see `Interrupts`);
    3. from here until 6, a SIGINT/SIGTERM is held back, so that
    4. the epoch's metrics are logged to MLflow and
    5. model and optimizer are saved (`trainer.resume=true` restores from here) as one step: the store
       and the backup always agree on the last finished epoch, and a resumed run logs each epoch once;
    6. a signal that arrived meanwhile is raised now, after the save.
    """
    return [
        StopOnDivergence(resumed_loss),
        interrupts.at_batch_end(),
        interrupts.hold(),
        logger,
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        interrupts.release(),
    ]


class EpochMetricsLogger(keras.callbacks.Callback):
    """Logs every metric Keras reports at the end of an epoch, with step = epoch number (1-based),
    plus the epoch's wall time and throughput. Values the store does not take are kept and retried.
    `started` is when the job (tfrexp.run_context.job_start) or the API call started, on the time.perf_counter
    clock."""

    def __init__(self, examples_per_epoch: int, metrics: MetricBuffer, ready: ReadyTimes | None = None,
                 started: float | None = None) -> None:
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self.started = time.perf_counter() if started is None else started
        self.metrics = metrics  # keeps what the store does not take, to retry
        self.ready = ready  # when each training batch was ready: gives the time steps waited for input
        self._step_ends: list[float] = []
        self._epoch_first_batch: list[int] = []
        self.startup_seconds: float | None = None  # `started` to the end of the first training step

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()
        self._epoch_first_batch.append(len(self._step_ends))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._step_ends.append(time.perf_counter())
        if len(self._step_ends) == 1:
            self.startup_seconds = self._step_ends[0] - self.started
            log.info("first training step done, %.1f s after the job started", self.startup_seconds)

    def _input_wait_seconds(self) -> float | None:
        """Time this epoch's steps waited for their batch: batch k+1 kept the loop waiting for as long as it
        became ready after step k ended. The epoch's first batch is left out (validation ran before it)."""
        if self.ready is None or self.model.steps_per_execution != 1:
            return None  # several steps per callback: the step ends are not observable
        first, ends, ready = self._epoch_first_batch[-1], self._step_ends, self.ready.times
        return sum(max(0.0, ready[k + 1] - ends[k]) for k in range(first, min(len(ends), len(ready)) - 1))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        metrics["epoch_seconds"] = time.perf_counter() - self._started  # validation included
        # Throughput and input wait count the training steps alone: from the epoch's start to its last step.
        train_seconds = self._step_ends[-1] - self._started if len(self._step_ends) > self._epoch_first_batch[-1] \
            else metrics["epoch_seconds"]
        metrics["train_seconds"] = train_seconds
        metrics["examples_per_second"] = self.examples_per_epoch / train_seconds
        waited = self._input_wait_seconds()
        if waited is not None:
            metrics["input_wait_share"] = waited / train_seconds
        if self.startup_seconds is not None and len(self._epoch_first_batch) == 1:
            metrics["startup_seconds"] = self.startup_seconds
        self.metrics.log(metrics, step=epoch + 1)


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, or has exploded: grown past
    EXPLODED times the run's first loss (and past EXPLODED in any case). A resumed run compares from its first
    batch on with the loss it had logged last (`reference`): its own first batch may already have exploded
    (a run that diverged, resumed from the epoch before), and taken as the start it would pass unchecked."""

    EXPLODED = 10.0

    def __init__(self, reference: float | None = None) -> None:
        super().__init__()
        self.reference = reference
        self._first: float | None = reference  # the run's first loss
        self._epoch = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._first = self.reference

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        where = f"at epoch {self._epoch + 1}, batch {batch + 1}; lower trainer.learning_rate"
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training diverged: loss is {loss} {where}")
        if self._first is None:
            self._first = loss
        elif loss > self.EXPLODED * max(self._first, 1.0):
            raise TrainingDiverged(f"training diverged: loss rose from {self._first:.3g} to {loss:.3g} (over "
                                   f"{self.EXPLODED:g} times its start) {where}")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch


class Interrupts:
    """SIGINT, SIGTERM and SIGUSR2 (Slurm's time-limit warning, through submitit) as KeyboardInterrupt, held
    back while an epoch is being logged and saved, so the MLflow history and the backup always agree on the
    last finished epoch (no epoch lost or logged twice on resume). Use `installed()` around the tracked run and
    put `hold()` / `release()` around those callbacks. A signal raises at once, but Python drops an exception
    raised while it runs a finalizer (a tf.data iterator's `__del__`, say: "Exception ignored in ..."), and
    training would go on to finish; so `at_batch_end()` and `raise_received()` raise it again wherever the run
    goes on after one arrived, or after the sweep it is a job of received one (tfrexp.stop_signals). A SIGUSR2 that had a handler of its own before (submitit
    checkpoints and requeues the job there) is handed to it once the run has ended KILLED."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self) -> None:
        self._holding = False
        self._pending: int | None = None
        self._received: int | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous: dict = {}
        try:
            with stop_signals.handled(self.SIGNALS, self._handle) as previous:
                yield
        finally:
            handed_on = previous.get(signal.SIGUSR2)
            if self._received == signal.SIGUSR2 and callable(handed_on):
                handed_on(signal.SIGUSR2, None)

    def hold(self) -> keras.callbacks.Callback:
        return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: self._start_holding())

    def release(self) -> keras.callbacks.Callback:
        return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: self._stop_holding())

    def at_batch_end(self) -> keras.callbacks.Callback:
        return keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: self.raise_received())

    def raise_received(self) -> None:
        """Raise the signal received, if any (by this run, or by the sweep it is a job of, before the run began):
        reaching here means it has not stopped the run yet."""
        if not self._holding:
            stop_signals.raise_if_received()

    def _handle(self, signum: int, frame: object) -> None:
        self._received = self._received or signum
        if self._holding:
            stop_signals.note(signum)
            self._pending = signum
            return
        stop_signals.interrupt(signum)

    def _start_holding(self) -> None:
        self._holding = True

    def _stop_holding(self) -> None:
        self._holding = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise KeyboardInterrupt(f"signal {signum}")
