"""The stop signals (Ctrl-C's SIGINT, SIGTERM, Slurm's SIGUSR2) a process received, kept while anything that
catches them runs: a sweep, and inside it each job's run.

A handler turns a signal into KeyboardInterrupt at once, but Python drops an exception raised while it runs a
finalizer (a tf.data iterator's `__del__`, a module's clean-up during `import tensorflow`: "Exception ignored
in ..."), and the sweep or the run would go on to finish as if nothing had come. So every handler also notes
the signal here, and the places where work goes on (a run's next batch, a sweep's next job, the sweep's end)
call `raise_if_received()`. The note lasts until the outermost `handled` block ends: a sweep's jobs see a
signal the sweep received, and a notebook's next run does not see the last one's Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_received: int | None = None
_depth = 0


@contextmanager
def handled(signals: tuple[int, ...], handler: Callable[[int, object], None]) -> Iterator[dict]:
    """`handler` for `signals` during the block, the previous handlers back after it; yields the previous
    handlers. Signal handlers belong to the main thread: elsewhere (a joblib worker's job) nothing changes."""
    global _depth, _received
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {number: signal.signal(number, handler) for number in signals}
    _depth += 1
    try:
        yield previous
    finally:
        for number, before in previous.items():
            signal.signal(number, before)
        _depth -= 1
        if _depth == 0:
            _received = None


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
