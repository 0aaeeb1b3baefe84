"""A search trial's side of pruning: after every epoch the job reports its objective to the study, and stops
training when the search's pruner says the trial is hopeless. The study is reached through its storage URL
(`search.storage`), so this works in whatever process or machine a launcher runs the job."""

from __future__ import annotations

import logging
import math

import keras

from tfrexp.config.schema import SearchConfig
from tfrexp.search.study import PRUNED_AT_ATTR, load_trial

log = logging.getLogger(__name__)


class ReportToStudy(keras.callbacks.Callback):
    """Reports `objective` (a metric Keras logs every epoch) at step = epoch number (1-based); when the pruner
    prunes, the epoch ends training and `pruned_at_epoch` says which one it was. The last of `epochs` is never
    pruned: nothing is left to save, and the trial has trained out."""

    def __init__(self, search: SearchConfig, objective: str, epochs: int) -> None:
        super().__init__()
        self.objective, self.epochs = objective, epochs
        self.study, self.trial = load_trial(search.storage, search.study, search.trial)
        self.pruned_at_epoch: int | None = None
        self._warned = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.objective)
        if value is None or not math.isfinite(float(value)):
            if not self._warned:
                log.warning("trial %d: %s is not logged after each epoch, so it cannot be pruned",
                            self.trial.number, self.objective)
                self._warned = True
            return
        step = epoch + 1
        self.trial.report(float(value), step)
        if step < self.epochs and self.trial.should_prune():
            self.pruned_at_epoch = step
            self.trial.set_user_attr(PRUNED_AT_ATTR, step)
            log.info("trial %d pruned after epoch %d (%s=%.4f)", self.trial.number, step, self.objective, value)
            self.model.stop_training = True
