"""Calling the user's code: checking what was passed, and naming it when it raises."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["UserCodeError", "call", "check_common"]


class UserCodeError(Exception):
    """The user's code (``where``: "model_fn", "loss_fn", "train_step", ...) raised.

    The original exception is chained (``__cause__``) and kept in ``.error``.
    """

    def __init__(self, case: str, where: str, error: BaseException) -> None:
        self.case, self.where, self.error = case, where, error
        super().__init__(
            f"[{case}] the user's {where} raised {type(error).__name__}: {error} "
            "(this is your code, not hybridcheck's; the traceback above shows where)"
        )


def call(case: str, where: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; an exception it raises becomes a :class:`UserCodeError`
    (except a verdict: ``InvariantNotApplicable`` passes through unchanged)."""
    from hybridcheck.describe.trees import InvariantNotApplicable

    try:
        return fn(*args)
    except (UserCodeError, InvariantNotApplicable):
        raise
    except Exception as err:
        raise UserCodeError(case, where, err) from err


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
