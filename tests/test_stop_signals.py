"""A stop signal whose KeyboardInterrupt Python dropped (it arrived in a finalizer) still stops the sweep it
came to, and the job that was starting; it is forgotten once the outermost catcher ends."""

from __future__ import annotations

import os
import signal
import sys

import pytest
from omegaconf import OmegaConf

from helpers import signal_in_a_finalizer
from tfrexp import stop_signals
from tfrexp.tracking.sweep import parent_closed_on_failure
from tfrexp.training.callbacks import Interrupts


def test_a_sweep_whose_interrupt_python_dropped_still_ends_interrupted(tmp_path, capsys):
    """Seen in CI: a sweep sent SIGINT as its first job started ran both jobs and exited 0 (the signal came
    while `import tensorflow` ran a finalizer)."""
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN in a `command &` of a script
    with pytest.raises(SystemExit) as exited:
        with parent_closed_on_failure(config):
            signal_in_a_finalizer(signal.SIGINT)
    assert exited.value.code == 130
    assert capsys.readouterr().err.startswith("tfrexp: the sweep was interrupted")
    assert stop_signals.received() is None, "forgotten once the sweep has ended"
    assert signal.getsignal(signal.SIGINT) is before, "the previous handler is back"


class _FailingFinalizer:
    def __del__(self) -> None:
        raise ValueError("a finalizer's own error")


def test_a_dropped_stop_signal_is_not_reported_as_an_ignored_exception_and_other_errors_still_are(monkeypatch):
    """Python printed "Exception ignored in ... Traceback ... KeyboardInterrupt: signal 15" in a stopped run's
    output, which read like a crash; it is noted and raised again, so its report is left out."""
    reported = []

    def report(unraisable):
        reported.append(type(unraisable.exc_value))

    monkeypatch.setattr(sys, "unraisablehook", report)
    with stop_signals.handled((signal.SIGTERM,), lambda signum, frame: stop_signals.interrupt(signum)):
        with stop_signals.handled((signal.SIGINT,), lambda signum, frame: stop_signals.interrupt(signum)):
            signal_in_a_finalizer(signal.SIGTERM)
        _FailingFinalizer()  # made and dropped at once
        with pytest.raises(KeyboardInterrupt, match=f"signal {int(signal.SIGTERM)}"):
            stop_signals.raise_if_received()
    assert reported == [ValueError]
    assert sys.unraisablehook is report, "Python's hook is back after the outermost block"
    _FailingFinalizer()
    assert reported == [ValueError, ValueError]


def test_a_run_stops_on_a_signal_its_sweep_received_before_the_run_began():
    def sweep_handler(signum, frame):
        stop_signals.note(signum)
        raise KeyboardInterrupt

    with stop_signals.handled((signal.SIGTERM,), sweep_handler):
        signal_in_a_finalizer(signal.SIGTERM)
        interrupts = Interrupts()
        with interrupts.installed():
            with pytest.raises(KeyboardInterrupt, match=f"signal {int(signal.SIGTERM)}"):
                interrupts.raise_received()  # what the run's next batch end calls
        with pytest.raises(KeyboardInterrupt):
            stop_signals.raise_if_received()  # what the sweep's next job calls first
    later = Interrupts()
    with later.installed():
        later.raise_received()  # a later run in the same process (a notebook's next call) is not stopped


def test_a_signal_during_a_deferred_block_is_raised_as_it_ends_and_not_again_while_stopping():
    def handler(signum, frame):
        stop_signals.interrupt(signum)

    done = []
    with stop_signals.handled((signal.SIGTERM,), handler):
        with pytest.raises(KeyboardInterrupt, match=f"signal {int(signal.SIGTERM)}"):
            with stop_signals.deferred():
                with stop_signals.deferred():  # nested: raised by the outermost only
                    os.kill(os.getpid(), signal.SIGTERM)
                    done.append("inner")
                done.append("outer")
        assert done == ["inner", "outer"], "the block ran to its end"
        with stop_signals.deferred():  # already stopping (the clean-up of what the first signal stopped)
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("clean-up")
        assert done[-1] == "clean-up" and stop_signals.received() == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # outside a deferred block: at once
            done.append("not reached")
    assert "not reached" not in done


def test_a_second_signal_in_a_deferred_block_raises_at_once_and_an_error_inside_leaves_no_signal_held():
    def handler(signum, frame):
        stop_signals.interrupt(signum)

    done = []
    with stop_signals.handled((signal.SIGTERM,), handler):
        with pytest.raises(KeyboardInterrupt):
            with stop_signals.deferred():  # a write that hangs: the user presses again
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("first held")
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("not reached")
    assert done == ["first held"]
    with stop_signals.handled((signal.SIGTERM,), handler):
        with pytest.raises(ValueError):
            with stop_signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                raise ValueError("the write failed")  # its own error goes on; the signal stays noted
        assert stop_signals.received() == signal.SIGTERM
    with stop_signals.deferred():  # a later block, after that one ended in an error, raises nothing
        done.append("later")
    assert done[-1] == "later"
