"""What the report says when an invariant's check raised: whose code raised it (the
case's own functions, or the checking itself), with the user's frames shown and
hybridcheck's hidden unless ``DEBUG``; and the cause shared by every invariant one
user error blocks.
"""

from __future__ import annotations

import contextvars

from hybridcheck.describe.returns import BadReturn
from hybridcheck.describe.usercode import UserCodeError, format_error
from hybridcheck.invariants import PREFIX

__all__ = ["DEBUG", "failure_cause", "failure_message"]


DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("debug", default=False)
"""``verify(debug=True)``: tracebacks keep hybridcheck's own frames."""


def failure_message(name: str, exc: BaseException) -> str:
    """The report's message for an invariant that raised ``exc``, saying whose code
    raised it: the case's (its loss, step, ...) or the checking itself. The user's
    frames are shown, hybridcheck's only under ``DEBUG``."""
    if isinstance(exc, AssertionError):
        return str(exc)
    if isinstance(exc, BadReturn):  # what came back is the whole story
        return str(exc)
    tail = format_error(exc, debug=DEBUG.get())
    if isinstance(exc, UserCodeError):  # a finding about the user's code
        return f"{exc}\n{tail}"
    return (
        f"{PREFIX} {name}: checking raised {type(exc).__name__}: {exc} (not in the "
        "case's loss or step: a case field that does not fit, or a hybridcheck bug "
        f"to report; --debug shows where)\n{tail}"
    )


def failure_cause(exc: BaseException) -> str:
    """What a failure is about when it is not an invariant's own verdict: the user
    call that raised (the same for every invariant it blocks)."""
    if isinstance(exc, UserCodeError):
        return str(exc)
    if not isinstance(exc, AssertionError):
        return f"checking raised {type(exc).__name__}: {exc}"
    return ""
