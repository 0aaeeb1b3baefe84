"""Hydra's Optuna sweeper, made to resume: `n_trials` is the size of the whole study, not of this call.

The stock sweeper loads a stored study (`load_if_exists`) and then runs `n_trials` more trials every time it
is started, so running a killed search again would overshoot. This one counts the trials the study has
already finished (complete, pruned or failed) and runs only the rest: the same command continues a search
where it stopped, and a larger `hydra.sweeper.n_trials` extends a finished one. A trial that was running
when its search was killed stays RUNNING in the study (Optuna 2.x only reaps such trials with heartbeats)
and is not counted, so it is run anew. Hydra accepts sweepers only from the `hydra_plugins` package, hence
this module's home.

The sweeper pins Optuna 2.x, whose database storage stamps its schema version on a connection it never
commits; under SQLAlchemy 2 (which MLflow needs) the stamp is lost and every later open fails its schema
check. A new database is therefore stamped here, in a committed transaction, before Optuna first opens it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

from tfrexp.tracking.sweep import parent_closed_on_failure, with_absolute_paths

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        # A search whose every trial failed raises from study.best_trial; Ctrl-C and SIGTERM raise too: the
        # sweep's MLflow parent run ends all the same. Trials get absolute paths, wherever a launcher runs them.
        with parent_closed_on_failure(self.sweeper.config):
            return self._resume(with_absolute_paths(self.sweeper.config, arguments))

    def _resume(self, arguments: list[str]) -> Any:
        search = self.sweeper  # the plugin's implementation, which reads n_trials when it runs
        if isinstance(search.storage, str) and search.study_name:
            finished = _finished_trials(search.storage, search.study_name)
            if finished:
                to_go = max(search.n_trials - finished, 0)
                log.info("study %s already holds %d finished trials of %d: %s", search.study_name, finished,
                         search.n_trials, f"running the other {to_go}" if to_go else
                         "nothing to run (raise hydra.sweeper.n_trials to extend it)")
                search.n_trials = to_go
                if hasattr(search.sampler, "reseed_rng"):
                    # A seeded sampler would replay its first draws (TPE's random start-up trials): the
                    # trials the study already has. The continuation draws from a fresh seed instead.
                    search.sampler.reseed_rng()
        return super().sweep(arguments)


def _finished_trials(storage: str, study_name: str) -> int:
    import optuna

    _make_sqlite_folder(storage)
    _stamp_schema_version(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # Optuna 2.x: no study of that name yet
        return 0
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=done))


def _make_sqlite_folder(storage: str) -> None:
    """SQLite creates the database file but not its folder (a fresh `outputs/`)."""
    prefix = "sqlite:///"
    if storage.startswith(prefix):
        Path(storage[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)


def _stamp_schema_version(storage: str) -> None:
    """Stamp a database that holds no study yet with the schema version Optuna is about to create."""
    import optuna
    import sqlalchemy
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    engine = sqlalchemy.create_engine(storage)
    try:
        with engine.begin() as connection:
            context = MigrationContext.configure(connection)
            if context.get_current_revision() is None and not sqlalchemy.inspect(connection).has_table("studies"):
                migrations = ScriptDirectory(str(Path(optuna.storages.__file__).parent / "_rdb" / "alembic"))
                context.stamp(migrations, migrations.get_current_head())
    finally:
        engine.dispose()
