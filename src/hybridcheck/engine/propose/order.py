"""The order in which a forward pass consumes its parameter leaves, read from the
traced program: for each input leaf, the first equation of ``jax.make_jaxpr(loss)``
that uses it (inside a ``pjit``, ``scan``, ``cond`` or custom-derivative call, the
position within it too).

A value that is only cast, copied or reshaped first is followed to where its result
is used, so a model that casts all its params up front (mixed precision) still shows
its forward order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["consumption_order"]

Position = tuple[int, ...]

_FORWARD = frozenset(
    {
        "convert_element_type",
        "copy",
        "copy_p",
        "reshape",
        "squeeze",
        "expand_dims",
        "broadcast_in_dim",
        "transpose",
    }
)
"""Primitives that pass a value on unchanged in substance: the use that matters is
the use of their result."""

_DEPTH = 12


def _sub_jaxpr(eqn: Any) -> tuple[Any, int] | None:
    """An inner jaxpr whose inputs are the equation's (``offset`` is added to an
    operand's position: -1 for ``cond``, whose first operand is the branch index)."""
    for value in eqn.params.values():
        if isinstance(value, tuple | list) and value:
            value = value[0]
        inner = getattr(value, "jaxpr", value)
        invars = getattr(inner, "invars", None)
        if invars is None or not hasattr(inner, "eqns"):
            continue
        if len(invars) == len(eqn.invars):
            return inner, 0
        if len(invars) == len(eqn.invars) - 1:
            return inner, -1
    return None


def _first_use(jaxpr: Any, var: Any, start: int = 0, depth: int = 0) -> Position | None:
    for j in range(start, len(jaxpr.eqns)):
        eqn = jaxpr.eqns[j]
        where = [k for k, v in enumerate(eqn.invars) if v is var]
        if not where:
            continue
        if depth >= _DEPTH:
            return (j,)
        if eqn.primitive.name in _FORWARD and len(eqn.outvars) == 1:
            later = _first_use(jaxpr, eqn.outvars[0], j + 1, depth + 1)
            return later if later is not None else (j,)
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            inner, offset = sub
            k = where[0] + offset
            if 0 <= k < len(inner.invars):
                within = _first_use(inner, inner.invars[k], 0, depth + 1)
                if within is not None:
                    return (j, *within)
        return (j,)
    return None


def consumption_order(
    loss: Callable[[Any, Any], Any], params: Any, batch: Any
) -> list[Position | None]:
    """For each leaf of ``params`` (in ``jax.tree.leaves`` order), where the traced
    ``loss(params, batch)`` first uses it; ``None`` for a leaf the loss never reads
    (BatchNorm statistics in a training forward pass, optimizer state)."""
    closed = jax.make_jaxpr(loss)(params, batch)
    n = len(jax.tree.leaves(params))
    jaxpr = closed.jaxpr
    return [_first_use(jaxpr, v) for v in jaxpr.invars[:n]]
