"""What user code may not do to a run: end it, or pass for a Ctrl-C.

Within :func:`guarded` (all of ``verify``), ``os._exit`` raises
:class:`ProcessExitCalled` instead of ending the process, and a ``KeyboardInterrupt``
is a person's Ctrl-C only when SIGINT really arrived; one that user code raises
itself, a ``SystemExit`` (``sys.exit``) or any other ``BaseException`` it raises
ends the run as an *abort* that names the user's line (exit code 4), never as a pass.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from hybridcheck.describe.usercode import user_site

__all__ = ["ProcessExitCalled", "abort_reason", "guarded", "real_exit"]

real_exit = os._exit
"""The process's own ``os._exit`` (the watchdog still needs it)."""


class ProcessExitCalled(BaseException):  # noqa: N818 - a signal, not an error
    """User code called ``os._exit(code)`` during a run."""

    def __init__(self, code: Any) -> None:
        super().__init__(code)
        self.code = code


class _State(threading.local):
    sigint = False


_STATE = _State()


def _refuse_exit(code: Any = 0) -> None:
    raise ProcessExitCalled(code)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Within the block, ``os._exit`` raises and a real SIGINT is recorded."""
    previous_exit = os._exit
    os._exit = _refuse_exit  # type: ignore[assignment]
    previous_sigint = None
    main = threading.current_thread() is threading.main_thread()
    if main:

        def on_sigint(signum: int, frame: Any) -> None:
            _STATE.sigint = True
            raise KeyboardInterrupt

        previous_sigint = signal.signal(signal.SIGINT, on_sigint)
    _STATE.sigint = False
    try:
        yield
    finally:
        os._exit = previous_exit
        if main and previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)


def abort_reason(exc: BaseException) -> str | None:
    """None for a person's Ctrl-C; otherwise why user code ended the run.

    Only for a ``BaseException`` that is not an ``Exception`` and not one of
    hybridcheck's own signals (a case's timeout, a shrink budget).
    """
    if isinstance(exc, KeyboardInterrupt) and _STATE.sigint:
        return None
    site = user_site(exc)
    at = f" at {site}" if site else ""
    if isinstance(exc, ProcessExitCalled):
        what = f"called os._exit({exc.code!r})"
    elif isinstance(exc, SystemExit):
        what = f"called sys.exit({exc.code!r}) (raised SystemExit)"
    elif isinstance(exc, KeyboardInterrupt):
        what = "raised KeyboardInterrupt itself (no Ctrl-C was pressed)"
    else:
        what = f"raised {type(exc).__name__}: {exc} (a BaseException, not an Exception)"
    return (
        f"user code {what}{at}: a step, loss or model must return, not end the "
        "process; the run stopped here, so no verdict is a pass"
    )
