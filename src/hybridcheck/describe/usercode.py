"""Calling the user's code: checking what was passed, naming it when it raises, and
showing the user's own frames of a traceback (never hybridcheck's)."""

from __future__ import annotations

import contextlib
import inspect
import os
import sysconfig
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = [
    "UserCodeError",
    "active_call",
    "call",
    "check_common",
    "format_error",
    "defined_at",
    "is_user_frame",
    "user_site",
]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIBRARY_DIRS = tuple(
    {
        os.path.abspath(p) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    }
)
_CALLS: list[tuple[str, str, float]] = []
"""The user calls in progress (case, where, start): what did not return on a
timeout."""


class UserCodeError(Exception):
    """The user's code (``where``: "model_fn", "loss_fn", "train_step", ...) raised.

    The original exception is chained (``__cause__``) and kept in ``.error``.
    """

    def __init__(self, case: str, where: str, error: BaseException) -> None:
        self.case, self.where, self.error = case, where, error
        site = user_site(error)
        at = f" at {site}" if site else ""
        # A message of several lines (JAX's pytree errors) is said once, where the
        # traceback ends: this line keeps its first line and where it was raised.
        first, *more = str(error).splitlines() or [""]
        rest = " [...]" if more else ""
        super().__init__(
            f"[{case}] the user's {where} raised {type(error).__name__}: {first}{rest}"
            f"{at} (your code, not hybridcheck's)"
        )


def active_call() -> tuple[str, str, float] | None:
    """The innermost user call still running: (case, where, seconds so far)."""
    if not _CALLS:
        return None
    case, where, start = _CALLS[-1]
    return case, where, time.perf_counter() - start


ON_CALL: list[Callable[[str, str, bool], None]] = []
"""Observers of user calls, ``(case, where, entering)``: the supervised worker
records them, so that a worker killed inside one (no Python runs on SIGKILL) is
said to have been in it."""


@contextlib.contextmanager
def _calling(case: str, where: str) -> Iterator[None]:
    _CALLS.append((case, where, time.perf_counter()))
    for observe in ON_CALL:
        observe(case, where, True)
    try:
        yield
    finally:
        _CALLS.pop()
        for observe in ON_CALL:
            observe(case, where, False)


def call(case: str, where: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; an exception it raises becomes a :class:`UserCodeError`
    (except a verdict: ``InvariantNotApplicable`` passes through unchanged)."""
    from hybridcheck.describe.trees import InvariantNotApplicable

    try:
        with _calling(case, where):
            return fn(*args)
    except (UserCodeError, InvariantNotApplicable):
        raise
    except Exception as err:
        raise UserCodeError(case, where, err) from err


def is_user_frame(filename: str) -> bool:
    """A frame of the user's code: not hybridcheck's, not the standard library's,
    not an installed package's (jax, flax, optax, hypothesis, ...)."""
    path = os.path.abspath(filename)
    if filename.startswith("<") or path.startswith(_PACKAGE + os.sep):
        return False
    return not any(path.startswith(d) for d in _LIBRARY_DIRS)


def _frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """Every frame of ``exc``'s traceback and of the exceptions that caused it."""
    frames: list[traceback.FrameSummary] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = list(traceback.extract_tb(current.__traceback__)) + frames
        current = current.__cause__ or current.__context__
    return frames


def defined_at(fn: Any) -> str:
    """``file.py:12 my_loss``: where the user's function ``fn`` is defined ("" when
    it is not the user's code, or its source cannot be found)."""
    fn = inspect.unwrap(getattr(fn, "func", fn))  # functools.partial, decorators
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: its class's __call__
        code = getattr(vars(type(fn)).get("__call__"), "__code__", None)
    if code is None or not is_user_frame(code.co_filename):
        return ""
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno} {code.co_name}"


def user_site(exc: BaseException) -> str:
    """``file.py:12 in my_step``: the innermost user frame of ``exc`` ("" if none)."""
    user = [f for f in _frames(exc) if is_user_frame(f.filename)]
    if not user:
        return ""
    f = user[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"


def format_error(exc: BaseException, *, debug: bool = False, limit: int = 6) -> str:
    """The exception for a person: the user's frames (innermost last, at most
    ``limit``), then the line that raised; every frame with ``debug``."""
    original = exc.error if isinstance(exc, UserCodeError) else exc
    if debug:
        return "".join(traceback.format_exception(original)).rstrip()
    frames = _frames(original)
    user = [f for f in frames if is_user_frame(f.filename)][-limit:]
    lines = [
        f'  File "{f.filename}", line {f.lineno}, in {f.name}'
        + (f"\n    {f.line.strip()}" if f.line else "")
        for f in user
    ]
    last = frames[-1] if frames else None
    if last is not None and not is_user_frame(last.filename):
        where = (
            "hybridcheck" if _PACKAGE in os.path.abspath(last.filename) else "a library"
        )
        lines.append(
            f"  raised inside {where}: {os.path.basename(last.filename)}:{last.lineno}"
            f" in {last.name}"
        )
    message = "".join(traceback.format_exception_only(original)).strip()
    return "\n".join([*lines, message]) if lines else message


def check_common(name: Any, halves: Any, tx: Any, **fns: Any) -> None:
    """What ``from_nnx`` and ``from_linen`` check before touching the model.

    Raises:
      RuntimeError: the installed Flax predates what real-model cases need.
      TypeError, ValueError: an argument of the wrong kind.
    """
    from hybridcheck import compat

    unsupported = compat.feature_support()["real_models"]
    if unsupported:
        raise RuntimeError(f"[{name}] {unsupported}")
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {type(name).__name__}")
    for arg, fn in fns.items():
        if not callable(fn):
            raise TypeError(
                f"[{name}] {arg} must be callable, got {type(fn).__name__} {fn!r:.80}"
            )
    if not callable(tx):
        hint = (
            " (pass optax.sgd, not optax.sgd(0.1): hybridcheck draws the lr)"
            if callable(getattr(tx, "update", None))
            else ""
        )
        raise TypeError(
            f"[{name}] tx must be a function of the learning rate returning an optax "
            f"GradientTransformation, got {type(tx).__name__}{hint}"
        )
    made = call(name, "tx", tx, 0.1)
    if not (callable(getattr(made, "init", None)) and callable(made.update)):
        raise TypeError(
            f"[{name}] tx(lr) must return an optax GradientTransformation, got "
            f"{type(made).__name__}"
        )
    if halves is not None and not (
        isinstance(halves, Mapping)
        and all(
            isinstance(k, str)
            and (isinstance(v, str) or all(isinstance(p, str) for p in v))
            for k, v in halves.items()
        )
    ):
        raise TypeError(
            f"[{name}] halves must map a label to a path pattern or a list of them "
            f"(e.g. {{'encoder': 'encoder/*'}}), got {halves!r:.80}"
        )
