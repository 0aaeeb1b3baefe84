"""A trial's side of pruning, on a real study in SQLite: it reports every epoch, stops when the search's pruner
says so, and is never pruned at its last epoch (nothing left to save)."""

from __future__ import annotations

import keras
import optuna

from tfrexp.config.schema import SearchConfig
from tfrexp.search.study import PRUNED_AT_ATTR, PRUNER_ATTR, open_study
from tfrexp.search.trial import ReportToStudy


def _trial_callback(tmp_path, epochs: int) -> tuple[ReportToStudy, optuna.Study]:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = open_study(storage, "s", "maximize")
    study.set_user_attr(PRUNER_ATTR, {"_target_": "optuna.pruners.ThresholdPruner", "lower": 2.0})  # prunes all
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    callback = ReportToStudy(SearchConfig(storage=storage, study="s", trial=trial.number), "val_accuracy", epochs)
    callback.set_model(keras.Sequential())
    callback.model.stop_training = False  # as fit sets it
    return callback, study


def test_a_trial_reports_and_stops_when_pruned(tmp_path):
    callback, study = _trial_callback(tmp_path, epochs=3)
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    assert callback.pruned_at_epoch == 1 and callback.model.stop_training
    [stored] = study.get_trials(deepcopy=False)
    assert stored.intermediate_values == {1: 0.5} and stored.user_attrs[PRUNED_AT_ATTR] == 1


def test_a_trial_is_never_pruned_at_its_last_epoch(tmp_path):
    """With trainer.epochs=1 every trial the pruner disliked was marked pruned, and left out of the best."""
    callback, study = _trial_callback(tmp_path, epochs=1)
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    assert callback.pruned_at_epoch is None and not callback.model.stop_training
    [stored] = study.get_trials(deepcopy=False)
    assert stored.intermediate_values == {1: 0.5} and PRUNED_AT_ATTR not in stored.user_attrs


def test_a_study_is_continued_only_with_the_fixed_overrides_its_trials_ran_with(tmp_path):
    """A second call with another model and data slice continued the study: its trial was pruned against trials
    of another net on other data, and the best reported was one of those."""
    import pytest

    from tfrexp.errors import ConfigError
    from tfrexp.search.study import hold_conditions

    first = ["model=cnn_small", "dataset.max_examples_per_split=2000", "paths.output_dir=/a",
             "hydra.sweep.dir=/a/multiruns/1", "tracking.uri=sqlite:////a/mlflow.db"]
    study = open_study(f"sqlite:///{tmp_path}/optuna.db", "s", "maximize")
    hold_conditions(study, "s", first)
    # Where it writes, how it runs and logs may change; the order of the overrides does not matter.
    hold_conditions(open_study(f"sqlite:///{tmp_path}/optuna.db", "s", "maximize"), "s", [
        "hydra.sweep.dir=/b/multiruns/2", "dataset.max_examples_per_split=2000", "model=cnn_small",
        "paths.output_dir=/b", "hydra/launcher=joblib", "hydra.sweeper.n_trials=20", "trainer.verbose=0"])
    with pytest.raises(ConfigError) as refused:
        hold_conditions(open_study(f"sqlite:///{tmp_path}/optuna.db", "s", "maximize"), "s",
                        ["model=cnn", "dataset.max_examples_per_split=1000", "paths.output_dir=/a"])
    assert str(refused.value) == (
        "hydra.sweeper.study_name=s: the study's trials ran with other fixed overrides (then "
        "dataset.max_examples_per_split=2000 model=cnn_small; now dataset.max_examples_per_split=1000 model=cnn): "
        "repeat them to continue it, or name a new study (hydra.sweeper.study_name=...)")
