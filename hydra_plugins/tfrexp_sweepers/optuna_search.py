"""Our Optuna sweeper (`hparams_search=mnist_optuna`): a search on the current Optuna, in Hydra's sweep syntax,
whose trials can be pruned, and which a killed search continues.

The driver asks the study for trials (`study.ask`), launches each batch of `n_jobs` through whatever launcher
the sweep uses (basic, joblib, Ray, Slurm) and tells the study each job's outcome. A job reports its objective
after every epoch to the study itself, found through `search.storage` (tfrexp.search.trial), and stops when
the pruner says so; the driver then tells the study the trial was PRUNED. `n_trials` is the size of the whole
study, not of this call: the same command continues a killed search, a larger `n_trials` extends a finished
one. Hydra accepts sweepers only from the `hydra_plugins` package, hence this module's home.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tfrexp.errors import first_line
from tfrexp.ray_head import require_launcher_cluster
from tfrexp.search.space import SearchSpace, search_space
from tfrexp.search.study import (PRUNED_AT_ATTR, PRUNER_ATTR, end_stopped_trials, finished_trials, hold_conditions,
                                 open_study)
from tfrexp.tracking.sweep import absolute_store_uri, parent_closed_on_failure, with_absolute_paths

log = logging.getLogger(__name__)


class OptunaSearchSweeper(Sweeper):
    def __init__(self, sampler: DictConfig, pruner: DictConfig, direction: str, storage: str, study_name: str,
                 n_trials: int, n_jobs: int, max_failure_rate: float, params: DictConfig | None) -> None:
        self.sampler_config, self.pruner_config = sampler, pruner
        # Absolute, as every trial's job opens it too, wherever a launcher runs it.
        self.direction, self.storage, self.study_name = direction, absolute_store_uri(storage), study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = OmegaConf.to_container(params) if params else {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        # Whatever stops the search (every trial failed, a launcher that cannot start, Ctrl-C, SIGTERM), the
        # sweep's MLflow parent run ends. Trials get absolute paths, wherever a launcher runs them.
        with parent_closed_on_failure(self.config):
            require_launcher_cluster(self.config)
            return self._search(search_space(self.params, with_absolute_paths(self.config, arguments)))

    def _search(self, space: SearchSpace) -> list:
        if not space.distributions:
            raise ValueError("nothing to search: hydra.sweeper.params is empty and no override sweeps")
        grid = space.grid() if "GridSampler" in str(self.sampler_config.get("_target_")) else None
        sampler = instantiate(self.sampler_config, **({"search_space": grid} if grid else {}))
        pruner = OmegaConf.to_container(self.pruner_config, resolve=True)
        study = open_study(self.storage, self.study_name, self.direction, sampler, instantiate(pruner))
        hold_conditions(study, self.study_name, space.fixed)  # no mixing trials run on other data or models
        study.set_user_attr(PRUNER_ATTR, pruner)  # each trial's job prunes by this rule
        done = len(finished_trials(study))
        to_go = max(self.n_trials - done, 0)
        if grid:  # past its last combination the grid sampler would draw the same ones again
            to_go = min(to_go, max(math.prod(len(values) for values in grid.values()) - done, 0))
        if done:
            log.info("study %s already holds %d finished trials of %d: %s", self.study_name, done, self.n_trials,
                     f"running the other {to_go}" if to_go else
                     "nothing to run (raise hydra.sweeper.n_trials to extend it)")
            if hasattr(sampler, "reseed_rng"):
                # A seeded sampler would replay its first draws (TPE's random start-up trials): the trials the
                # study already has. The continuation draws from a fresh seed instead.
                sampler.reseed_rng()
        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, Path(self.config.hydra.sweep.dir) / "multirun.yaml")
        returns, failed, launched = [], 0, 0
        while launched < to_go:
            trials: list = []
            try:
                for _ in range(min(self.n_jobs, to_go - launched)):
                    trials.append(study.ask(space.distributions))
                batch = [[*space.overrides(trial.params), f"search.storage={self.storage}",
                          f"search.study={self.study_name}", f"search.trial={trial.number}"] for trial in trials]
                results = self.launcher.launch(batch, initial_job_idx=launched)
                for trial, result in zip(trials, results):
                    failed += not self._tell(study, trial, result)
            except BaseException:  # Ctrl-C, SIGTERM, a launcher that fails: the batch's trials will not end
                self._end_stopped(study, trials)
                raise
            launched += len(trials)
            returns.append(results)
            if failed / self.n_trials > self.max_failure_rate:
                raise RuntimeError(f"{failed} of {launched} trials failed, over hydra.sweeper.max_failure_rate="
                                   f"{self.max_failure_rate}")
        self._save_best(study)
        return returns

    @staticmethod
    def _end_stopped(study: Any, trials: list) -> None:
        try:
            end_stopped_trials(study, trials)
        except Exception as error:  # noqa: BLE001 -- the study's storage may be what failed: its error is the one
            log.warning("the stopped trials %s could not be ended in the study: %s",
                        [trial.number for trial in trials], error)

    def _tell(self, study: Any, trial: Any, result: Any) -> bool:
        """Tell the study how the trial's job ended; False when it failed."""
        import optuna

        try:
            value = float(result.return_value)  # the job's exception, if it failed
        except Exception as error:  # noqa: BLE001 -- a failed trial is marked and the search goes on
            log.warning("trial %d failed: %s", trial.number, first_line(error))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return False
        # The job marked it pruned in the storage; `trial.user_attrs` is the driver's cached copy, so read it back.
        [stored] = [frozen for frozen in study.get_trials(deepcopy=False) if frozen.number == trial.number]
        if PRUNED_AT_ATTR in stored.user_attrs:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif math.isfinite(value):
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return False
        return True

    def _save_best(self, study: Any) -> None:
        """`optimization_results.yaml` in the sweep folder: the best trial of the study so far."""
        try:
            best = study.best_trial
        except ValueError:  # no complete trial yet
            return
        results = {"name": "optuna", "study_name": self.study_name, "best_trial": best.number,
                   "best_params": best.params, "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), Path(self.config.hydra.sweep.dir) / "optimization_results.yaml")
        log.info("best trial %d: %s=%.4f %s", best.number, self.config.trainer.objective, best.value, best.params)
