"""The stop signals (Ctrl-C's SIGINT, SIGTERM, Slurm's SIGUSR2) a process received, kept while anything that
catches them runs: a sweep, and inside it each job's run.

A handler turns a signal into KeyboardInterrupt at once, but Python drops an exception raised while it runs a
finalizer (a tf.data iterator's `__del__`, a module's clean-up during `import tensorflow`: "Exception ignored
in ..."), and the sweep or the run would go on to finish as if nothing had come. So every handler also notes
the signal here, and the places where work goes on (a run's next batch, a sweep's next job, the sweep's end)
call `raise_if_received()`. The note lasts until the outermost `handled` block ends: a sweep's jobs see a
signal the sweep received, and a notebook's next run does not see the last one's Ctrl-C. Meanwhile Python's
report of the dropped exception ("Exception ignored in ... Traceback ... KeyboardInterrupt: signal 15", which
read like a crash in a stopped run's output) is left out: the signal is noted and raised again.

Nor may a signal break into a write to the tracking store (a `deferred` block): one raised inside SQLAlchemy's
session left SQLite's write lock with the process, and the run's end and the sweep's end then waited on it and
failed ("database is locked"), the sweep's parent left RUNNING (seen in the interrupted-sweep test, 2026-12-05).
There a handler's `interrupt` only notes the signal, and it is raised as the block ends (a second one, at once).
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_received: int | None = None
_depth = 0
_deferring = 0  # nested `deferred` blocks in the main thread
_held: int | None = None  # a signal that came during one
_stopping_before = False  # a signal had come before the outermost one began


@contextmanager
def handled(signals: tuple[int, ...], handler: Callable[[int, object], None]) -> Iterator[dict]:
    """`handler` for `signals` during the block, the previous handlers back after it; yields the previous
    handlers. Signal handlers belong to the main thread: elsewhere (a joblib worker's job) nothing changes."""
    global _depth, _received
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {number: signal.signal(number, handler) for number in signals}
    outermost_hook = sys.unraisablehook if _depth == 0 else None
    if outermost_hook is not None:
        sys.unraisablehook = _without_dropped_signals(outermost_hook)
    _depth += 1
    try:
        yield previous
    finally:
        for number, before in previous.items():
            signal.signal(number, before)
        _depth -= 1
        if outermost_hook is not None:
            sys.unraisablehook = outermost_hook
        if _depth == 0:
            _received = None


def _without_dropped_signals(report: Callable[[object], None]) -> Callable[[object], None]:
    """Python's hook for an exception it dropped, less a noted stop signal's KeyboardInterrupt."""
    def hook(unraisable: object) -> None:
        if not (isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt) and _received is not None):
            report(unraisable)
    return hook


def interrupt(signum: int) -> None:
    """What a handler does with a stop signal: note it and raise KeyboardInterrupt, or, inside a `deferred`
    block, leave that to the block's end; a second one there raises at once (a store that hangs, a user who
    presses Ctrl-C again: the write is given up)."""
    global _held
    note(signum)
    if _deferring and _held is None:
        _held = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def deferred() -> Iterator[None]:
    """A block a stop signal does not break into (a write to the tracking store); one that came meanwhile is
    raised as it ends, unless the process was already stopping when it began (its clean-up goes on: the signal
    is noted for `raise_if_received`). Also a decorator. Only the main thread, where handlers run, defers."""
    global _deferring, _held, _stopping_before
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _deferring == 0:
        _stopping_before = _received is not None
    _deferring += 1
    try:
        yield
    finally:
        held = _held if _deferring == 1 else None
        if _deferring == 1:
            _held = None
        _deferring -= 1
    if held is not None and not _stopping_before:  # after an error inside, that error goes on instead
        raise KeyboardInterrupt(f"signal {held}")


def note(signum: int) -> None:
    """Called by a handler: the first signal received is the one raised again."""
    global _received
    _received = _received or signum


def received() -> int | None:
    return _received


def raise_if_received() -> None:
    """Raise the signal received, if any: reaching here means its first exception did not stop the work."""
    if _received is not None:
        raise KeyboardInterrupt(f"signal {_received}")
