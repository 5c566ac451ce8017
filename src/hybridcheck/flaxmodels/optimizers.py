"""The optimizer as the user builds it: ``tx(lr)``, or their own factory.

``from_nnx`` takes ``optimizer_fn(model, lr) -> nnx.Optimizer`` (the user's own
``nnx.Optimizer(model, tx, wrt=...)`` call) and ``from_linen`` takes
``train_state_fn(variables, lr) -> TrainState`` (their ``TrainState.create`` call);
``tx`` is then read from what the factory built (``optimizer.tx``, ``state.tx``).

The learning rate is drawn by Hypothesis and reaches the step traced, unless the
optimizer cannot be *built* from a traced one: optax checks some schedule arguments
in Python (``warmup_cosine_decay_schedule`` tests ``peak_value == 0.0`` and raises
``TracerBoolConversionError`` on a tracer). :func:`lr_plan` finds out by building
the optimizer once under ``jax.eval_shape``; such an optimizer gets one concrete lr
(``lr=`` if it is a number, else :data:`FIXED_LR`), the same in every step, and the
case's lr is that number. What each step actually applies (a warmup at lr 0, a
schedule's later values) is read from the optimizer itself by the invariants: the
threaded optimizer state and ``tx`` give every step's own update.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
from collections.abc import Callable
from typing import Any

import jax
from hypothesis import strategies as st

from hybridcheck.describe.fields import given
from hybridcheck.describe.usercode import UserCodeError

__all__ = ["FIXED_LR", "LrPlan", "check_optimizer_args", "common_tx", "lr_plan"]

FIXED_LR = 0.01
"""The learning rate an optimizer that cannot take a traced one is built with when
the case gives no ``lr=``."""


def _standin_tx(lr: Any) -> Any:
    """What ``check_common`` is shown for ``tx`` when a factory builds the optimizer
    (the factory's own result is checked once the model exists)."""
    return types.SimpleNamespace(init=lambda params: (), update=lambda u, s, p=None: u)


def common_tx(tx: Any) -> Any:
    """``tx`` for the checks shared with the ``tx=`` form: the given one, or a
    stand-in where a factory builds the optimizer."""
    return _standin_tx if tx is None else tx


def check_optimizer_args(
    name: str,
    origin: str,
    *,
    tx: Any,
    factory: Any,
    factory_name: str,
    example: str,
    not_with: dict[str, Any],
) -> None:
    """Exactly one of ``tx`` and the factory; nothing the factory already says.

    Raises:
      TypeError: both or neither, a factory that is not callable, or an argument of
        ``not_with`` (``wrt``, ``make_state``, ...) passed beside the factory.
    """
    if tx is None and factory is None:
        raise TypeError(
            f"[{name}] {origin} needs the optimizer: {factory_name}={example} (your "
            "own construction, any optax transformation or schedule), or "
            "tx=optax.adam (a function of the learning rate)"
        )
    if factory is None:
        return
    if tx is not None:
        raise TypeError(
            f"[{name}] {origin} got both tx= and {factory_name}=: the optimizer "
            f"{factory_name} builds holds its tx; pass one of them"
        )
    if not callable(factory):
        raise TypeError(
            f"[{name}] {factory_name} must be a function, e.g. {factory_name}="
            f"{example}; got {given(factory)}"
        )
    for arg, value in not_with.items():
        if value is not None:
            raise TypeError(
                f"[{name}] {origin} got {arg}=... beside {factory_name}=: your "
                f"{factory_name} already says it; drop {arg}=..."
            )


@dataclasses.dataclass(frozen=True)
class LrPlan:
    """How the learning rate reaches the optimizer.

    Attributes:
      fixed: the concrete lr every step builds the optimizer with (None: the drawn
        lr, traced).
      case_lr: the ``lr`` field of the case (the fixed number where there is one).
    """

    fixed: float | None
    case_lr: Any

    def used(self, lr: Any) -> Any:
        """The lr the optimizer is built with when the step is given ``lr``."""
        return lr if self.fixed is None else self.fixed


def _needs_concrete_lr(build: Callable[[Any], Any]) -> bool:
    try:
        jax.eval_shape(lambda lr: jax.tree.leaves(build(lr)), 0.1)
    except jax.errors.ConcretizationTypeError:
        return True
    except UserCodeError as err:
        if isinstance(err.error, jax.errors.ConcretizationTypeError):
            return True
        raise
    return False


def lr_plan(name: str, where: str, build: Callable[[Any], Any], lr: Any) -> LrPlan:
    """Whether ``build(lr)`` (the optimizer's state) accepts a traced lr.

    Args:
      name: the case, for messages.
      where: what builds the optimizer (``"tx"``, ``"optimizer_fn"``, ...).
      build: ``build(lr)`` -> a pytree (the optimizer's state), the user's code
        called through ``usercode.call``.
      lr: the ``lr=`` the user passed (None, a number or a strategy).

    Raises:
      ValueError: the optimizer needs a concrete lr and ``lr`` is a strategy.
      UserCodeError: ``build`` raised something else.
    """
    if not _needs_concrete_lr(build):
        return LrPlan(None, lr)
    if lr is None:
        return LrPlan(FIXED_LR, FIXED_LR)
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        return LrPlan(float(lr), lr)
    if isinstance(lr, st.SearchStrategy):
        raise ValueError(
            f"[{name}] lr: {where} cannot be built from a traced learning rate (optax "
            "checks a schedule's values in Python and raised a "
            "ConcretizationTypeError), so hybridcheck cannot draw it; pass lr=<a "
            "number> (each step builds the optimizer with it; what the schedule "
            "makes of it is read from the optimizer's state)"
        )
    return LrPlan(None, lr)  # not a learning rate: HybridCase names it
