"""The `tfrexp` entrypoint (also `python -m tfrexp`): a Hydra app over the config tree shipped in tfrexp/conf/.

It composes and checks the config before TensorFlow is imported, so a mistake costs well under a
second; user-facing errors are printed as one line (HYDRA_FULL_ERROR=1 shows the traceback). In a sweep
(-m) a failed job is reported and the other jobs go on.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tfrexp import config, run_context, stop_signals
from tfrexp.errors import ConfigError, TfrexpError, exit_with_error
from tfrexp.tracking.names import sweep_overrides
from tfrexp.tracking.sweep import record_refused_job
from tfrexp.training.backend import prepare_backend

log = logging.getLogger("tfrexp")


def main() -> None:
    """The command: register the schemas the config tree is typed with, then let Hydra compose and run."""
    run_context.register_schemas()
    run_job()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="config")
def run_job(composed: DictConfig) -> float:
    """One job (the run, or one job of a sweep); returns the objective a sweeper optimises."""
    hydra_config = HydraConfig.get()
    in_sweep = hydra_config.mode == RunMode.MULTIRUN
    started = run_context.job_start()
    try:
        stop_signals.raise_if_received()  # a sweep's next job does not start after a signal it did not stop at
        try:
            settings, source = run_context.check(composed)
            context = run_context.run_context(composed, hydra_config, settings,
                                              Path(hydra_config.runtime.output_dir), started)
            prepare_backend(settings.trainer, hydra_config)  # may refuse too: no free GPU, another Keras backend
        except TfrexpError as refused:  # before any run exists: in a sweep, a failed child records it
            if in_sweep:
                record_refused_job(hydra_config, composed, str(refused))
            raise
        from tfrexp import experiment  # imports TensorFlow: only once the config is known to be good

        result = experiment.run(settings, source, context)
        print(result.summary())
        return result.objective
    except KeyboardInterrupt:
        if in_sweep:
            raise  # the sweeper ends the sweep's parent run KILLED, and says so
        print("tfrexp: interrupted; the MLflow run ends KILLED and its last finished epoch is saved: "
              "run the same command with trainer.resume=true to continue it", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not (in_sweep or isinstance(error, TfrexpError)):
            raise
        if in_sweep:
            # The job's MLflow run is already FAILED. Optuna marks a trial that raises as failed and goes
            # on (max_failure_rate); Hydra's basic sweeper would stop the sweep, so there it scores NaN.
            log.error("job failed: %s", error, exc_info=not isinstance(error, TfrexpError))
            if "optuna" in str(OmegaConf.select(hydra_config, "sweeper._target_")):
                raise
            return math.nan
        exit_with_error(error)


class ConfigCheck(Callback):
    """Checks the config before Hydra creates the run folder (config.yaml lists it first), so a refused
    run leaves nothing under outputs/. Hydra turns a callback's exception into a warning; SystemExit stops."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        self._check(config)
        self._check_swept_keys(config)

    @staticmethod
    def _check_swept_keys(composed: DictConfig) -> None:
        """A swept key the config lacks (`trainer.epoch=1,2`) failed every job in Hydra's composition, after the
        sweep's MLflow parent run had been made; the sweep's own config has the swept keys at their defaults."""
        groups = set(composed.hydra.runtime.choices)
        for override in sweep_overrides(list(composed.hydra.overrides.task)):
            key = override.key_or_group
            if override.is_add() or override.is_force_add() or key in groups or "/" in key:
                continue
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(composed, parent_key) if parent_key else composed
            if not (isinstance(parent, DictConfig) and leaf in parent):
                message = (f"{key}: no such key in the config (swept by {override.input_line}); to add it, "
                           f"+{override.input_line}")
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise ConfigError(message)
                exit_with_error(message)

    @staticmethod
    def _check(composed: DictConfig) -> None:
        try:
            run_context.check(composed)
        except TfrexpError as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            exit_with_error(error)


if __name__ == "__main__":
    main()
