"""A case's time budget: an alarm that interrupts a case which runs too long.

Two halves: :class:`~hybridcheck.engine.search.Running` checks the deadline between
checks (cooperative, works in any thread), and on the main thread of a POSIX process
an interval timer raises :class:`~hybridcheck.engine.search.CaseTimeout` in the
middle of a check, naming the user call that had not returned, so a step that loops
forever in Python is interrupted too. A step that never returns from compiled code
cannot be interrupted from Python: the CLI's supervisor ends the worker then.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from hybridcheck.describe.usercode import active_call
from hybridcheck.engine.search import CaseTimeout, Running


def _not_our_timeout(record: logging.LogRecord) -> bool:
    """JAX logs an exception raised inside a ``jax.debug.callback``; the budget's own
    alarm is not the user's error (the report says the case timed out)."""
    return not (record.exc_info and isinstance(record.exc_info[1], CaseTimeout))


@contextlib.contextmanager
def budget(running: Running, seconds: float | None) -> Iterator[None]:
    """Within the block, the case stops with CaseTimeout after ``seconds``."""
    if seconds is None:
        running.deadline = None
        yield
        return
    running.deadline = time.perf_counter() + seconds
    use_alarm = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not use_alarm:
        yield
        return

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise CaseTimeout(active_call())

    previous = signal.signal(signal.SIGALRM, on_alarm)
    callbacks = logging.getLogger("jax._src.debugging")
    callbacks.addFilter(_not_our_timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        callbacks.removeFilter(_not_our_timeout)
