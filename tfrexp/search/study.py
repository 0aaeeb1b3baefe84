"""The Optuna study of a search: opened (or created) in its database by the sweeper, and found again through
the same storage URL by every trial, wherever a launcher runs it.

The pruner is not something Optuna stores, so the sweeper writes its config on the study (`PRUNER_ATTR`), and
a trial builds the same pruner from there: every job prunes by the rule of the search it belongs to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfrexp.errors import ConfigError

PRUNER_ATTR = "tfrexp.pruner"  # the study's user attribute holding the pruner's config (`_target_` and arguments)
PRUNED_AT_ATTR = "tfrexp.pruned_at_epoch"  # a trial's user attribute: the epoch after which it stopped
STOPPED_ATTR = "tfrexp.stopped"  # a FAIL trial's user attribute: its search stopped before it ended
CONDITIONS_ATTR = "tfrexp.fixed_overrides"  # the study's user attribute: what every trial of it was run with
# Fixed overrides that do not change what a trial measures: where things go, how it is launched and logged.
NOT_CONDITIONS = ("hydra.", "hydra/", "paths.", "tracking.", "search.", "trainer.verbose=")


def open_study(storage: str, name: str, direction: str, sampler: Any = None, pruner: Any = None) -> Any:
    """Load the study of that name, or create it; a database an older Optuna made gets a one-line error."""
    import optuna

    _make_sqlite_folder(storage)
    try:
        return optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler,
                                   pruner=pruner, load_if_exists=True)
    except RuntimeError as error:
        if "optuna storage upgrade" not in str(error):
            raise
        raise ConfigError(
            f"hydra.sweeper.storage={storage}: the study database was made by an older Optuna (its schema: "
            f"{_made_by(error)}); upgrade it in place with `optuna storage upgrade --storage {storage}` "
            "to continue its studies, or give the search a new storage") from None


def hold_conditions(study: Any, study_name: str, fixed: list[str]) -> None:
    """A study's trials are only comparable (and prunable against each other) when they ran on the same data,
    model and schedule: the search's fixed overrides, less `NOT_CONDITIONS`, are written on the study, and a
    call that continues it with other ones is refused in one line. A study from before this rule takes the
    current ones."""
    conditions = sorted(override.lstrip("+") for override in fixed
                        if not override.lstrip("+~").startswith(NOT_CONDITIONS))
    held = study.user_attrs.get(CONDITIONS_ATTR)
    if held is None:
        study.set_user_attr(CONDITIONS_ATTR, conditions)
    elif held != conditions:
        gone, new = sorted(set(held) - set(conditions)), sorted(set(conditions) - set(held))
        raise ConfigError(
            f"hydra.sweeper.study_name={study_name}: the study's trials ran with other fixed overrides (then "
            f"{' '.join(gone) or 'none'}; now {' '.join(new) or 'none'}): repeat them to continue it, or name a new "
            "study (hydra.sweeper.study_name=...)")


def load_trial(storage: str, study_name: str, number: int) -> tuple[Any, Any]:
    """(study, trial) of a running trial, from inside its job; the study prunes with the search's pruner."""
    import optuna
    from hydra.utils import instantiate

    store = optuna.storages.get_storage(storage)
    study_id = store.get_study_id_from_name(study_name)
    pruner_config = store.get_study_user_attrs(study_id).get(PRUNER_ATTR)
    pruner = instantiate(pruner_config) if pruner_config else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=study_name, storage=store, pruner=pruner)
    trial_id = store.get_trial_id_from_study_id_trial_number(study_id, number)
    return study, optuna.trial.Trial(study, trial_id)


def finished_trials(study: Any) -> list:
    """The trials that count towards n_trials: complete, pruned or failed. One its search stopped (Ctrl-C,
    SIGTERM: FAIL and marked STOPPED_ATTR) or left RUNNING (SIGKILL, a lost node) does not count: its place is
    drawn again."""
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return [trial for trial in study.get_trials(deepcopy=False, states=done) if STOPPED_ATTR not in trial.user_attrs]


def end_stopped_trials(study: Any, trials: list) -> None:
    """The trials a stopping search launched and will not tell: FAIL, marked as stopped, rather than RUNNING
    for ever in the study (and in optuna-dashboard). A trial its job already ended is left as it is."""
    import optuna

    for trial in trials:
        try:
            trial.set_user_attr(STOPPED_ATTR, True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except (RuntimeError, ValueError):  # Optuna refuses to change a finished trial
            continue


def _make_sqlite_folder(storage: str) -> None:
    """SQLite creates the database file but not its folder (a fresh `outputs/`)."""
    prefix = "sqlite:///"
    if storage.startswith(prefix):
        Path(storage[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)


def _made_by(error: RuntimeError) -> str:
    text = str(error)
    start = text.find("(set up by ")
    return text[start + len("(set up by "):text.find(")", start)] if start >= 0 else "unknown"
