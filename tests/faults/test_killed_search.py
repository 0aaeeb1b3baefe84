"""An Optuna search killed half-way (SIGKILL of the whole sweep) continues from its stored study when the
same command runs again, and a finished search grows by the trials a larger n_trials adds."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys

import optuna

from helpers import REPO, run_tfrexp, wait_for

SEARCH = ["-m", "hparams_search=mnist_optuna", "model=cnn_small", "dataset.max_examples_per_split=300",
          "trainer.epochs=1", "trainer.verbose=0", "tracking.log_model=false", "tracking.system_metrics=false"]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def _trials(outputs, states=FINISHED):
    study = optuna.load_study(study_name="mnist_optuna", storage=f"sqlite:///{outputs}/optuna.db")
    return study.get_trials(deepcopy=False, states=states)


def _finished_in_database(outputs) -> int:
    """Read-only, with sqlite3: Optuna's own loader would create its tables while the search does."""
    path = outputs / "optuna.db"
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as database:
            return database.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]
    except sqlite3.OperationalError:  # its tables are not there yet, or it is being written
        return 0


def test_a_killed_search_continues_and_a_finished_one_extends(tmp_path):
    outputs = tmp_path / "outputs"
    command = [*SEARCH, f"paths.output_dir={outputs}"]
    search = subprocess.Popen([sys.executable, "-m", "tfrexp", *command, "hydra.sweeper.n_trials=4"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              env=os.environ.copy())
    try:
        wait_for(lambda: _finished_in_database(outputs) or search.poll() is not None, 300,
                 "the search's first finished trial")
        assert search.poll() is None, "the search ended before it could be killed"
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
        _, stderr = search.communicate(timeout=60)
    assert search.returncode == -signal.SIGKILL, stderr[-3000:]
    before = [trial.params for trial in _trials(outputs)]
    assert 1 <= len(before) < 4

    again = run_tfrexp(*command, "hydra.sweeper.n_trials=4")
    assert again.returncode == 0, again.stderr[-3000:]
    after = _trials(outputs)
    assert len(after) == 4 and [trial.params for trial in after[:len(before)]] == before, "kept, not redone"
    assert not [trial.params for trial in after[len(before):] if trial.params in before], "no trial drawn again"
    assert f"already holds {len(before)} finished trials of 4" in again.stdout

    extended = run_tfrexp(*command, "hydra.sweeper.n_trials=5")
    assert extended.returncode == 0, extended.stderr[-3000:]
    extended_trials = _trials(outputs)
    assert len(extended_trials) == 5 and "running the other 1" in extended.stdout
    assert extended_trials[4].params not in [trial.params for trial in extended_trials[:4]]
    # SIGKILL leaves no chance to end anything: the killed call's sweep folder is still held (the only one),
    # as its one-line refusal says to a sweep sent there. It is freed here, as a user would free it.
    [held] = list((outputs / "multiruns").glob("*/mlflow_sweep.json"))
    held.unlink()


def test_a_search_stopped_by_a_signal_leaves_no_trial_running(tmp_path):
    """SIGTERM (Ctrl-C's SIGINT takes the same way) as the first trial starts: the search ends as an interrupted
    sweep does (exit 130), and its trial ends FAIL, marked stopped, not RUNNING for ever; it does not count
    towards n_trials, so a continuation draws its place again."""
    from tfrexp.search.study import STOPPED_ATTR, finished_trials, open_study

    outputs = tmp_path / "outputs"
    search = subprocess.Popen([sys.executable, "-m", "tfrexp", *SEARCH, f"paths.output_dir={outputs}",
                               "hydra.sweeper.n_trials=2"], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        wait_for(lambda: list((outputs / "multiruns").glob("*/0")) or search.poll() is not None, 120,
                 "the first trial's job folder")
        search.send_signal(signal.SIGTERM)
        _, stderr = search.communicate(timeout=120)
    finally:
        search.kill()
    assert search.returncode == 130, stderr[-3000:]
    [trial] = _trials(outputs, states=None)
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs[STOPPED_ATTR] is True
    assert finished_trials(open_study(f"sqlite:///{outputs}/optuna.db", "mnist_optuna", "maximize")) == []
