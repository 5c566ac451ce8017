"""Per-leaf summaries of one update, reduced on the device.

The update invariants compare the params before and after a step with the gradient,
leaf by leaf. Copying every leaf to the host in float64 costs several passes over the
model per example and invariant, which at millions of parameters costs more than the
step itself. Here a compiled program per tree structure returns a few scalars per
leaf (in float64 where they accumulate); the host looks at the elements of a leaf
only when its summary flags it. Each invariant asks only for the group of columns it
reads (XLA fuses a few reductions of the same inputs well, many of them badly), and
a group computed once serves every invariant of the example that reads it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat

__all__ = ["GROUPS", "update_summary", "ulp_floor"]


def ulp_floor(p: Any) -> Any:
    """The smallest update a float step is sure to apply to ``p``: 4 ulp of ``p``,
    and at least 2 x the smallest normal number, because XLA flushes subnormal
    results to zero on CPU (``0 - 1e-3 * 1e-37 == -0.0`` under jit). Works on NumPy
    and JAX arrays alike."""
    dtype = p.dtype if jnp.issubdtype(p.dtype, jnp.floating) else np.float32
    finfo = jnp.finfo(dtype)
    return jnp.maximum(4 * finfo.eps * jnp.abs(p), 2 * finfo.tiny)


def _moves(o: Any, n: Any, g: Any, lr: Any, ulps: Any) -> dict[str, Any]:
    return {
        # some element differs between old and new
        "changed": jnp.any(o != n),
        # some element has lr * |g| above ulp_floor(old): a first-order step must
        # move it (lr weakly typed: the product keeps the gradient's dtype)
        "visible": jnp.any(lr * jnp.abs(g) > ulp_floor(o)),
        "graded": jnp.any(g != 0),  # some gradient element is nonzero
        "max_grad": jnp.max(jnp.abs(g), initial=0.0),
        "max_update": jnp.max(jnp.abs(n - o), initial=0.0),
    }


def _descent(o: Any, n: Any, g: Any, lr: Any, ulps: Any) -> dict[str, Any]:
    f64 = jnp.float64
    return {
        "changed": jnp.any(o != n),
        # <new - old, -g> in float64 from the start: float32 products of tiny
        # updates and gradients underflow to zero.
        "inner": jnp.sum((n.astype(f64) - o.astype(f64)) * -g.astype(f64)),
        "grad_sq": jnp.sum(jnp.square(g.astype(f64))),  # ||g||^2
    }


def _sgd(o: Any, n: Any, g: Any, lr: Any, ulps: Any) -> dict[str, Any]:
    # max(|new - (old - lr g)| - tol) in float64, tol = ulps ulp of
    # |old| + lr max|g|: > 0 means some element is no SGD step.
    f64 = jnp.float64
    eps = float(jnp.finfo(o.dtype).eps) if jnp.issubdtype(o.dtype, jnp.floating) else 0
    g_scale = jnp.max(jnp.abs(g), initial=0.0).astype(f64)
    tol = ulps * eps * (jnp.abs(o).astype(f64) + lr * g_scale)
    err = jnp.abs(n.astype(f64) - (o.astype(f64) - lr * g.astype(f64)))
    tiny = float(np.finfo(np.float32).tiny)
    return {"sgd_excess": jnp.max(err - tol - tiny, initial=-np.inf)}


def _reach(o: Any, n: Any, g: Any, lr: Any, ulps: Any) -> dict[str, Any]:
    # ``n`` is an update (the optimizer's own, not new params): does it move the
    # leaf by more than float resolution?
    return {
        "visible": jnp.any(jnp.abs(n) > ulp_floor(o)),
        "max_update": jnp.max(jnp.abs(n), initial=0.0),
    }


GROUPS: dict[str, Callable[..., dict[str, Any]]] = {
    "moves": _moves,
    "reach": _reach,
    "descent": _descent,
    "sgd": _sgd,
}
"""The column groups; each is one compiled program per tree structure."""


def _program(group: str) -> Callable[..., Any]:
    leaf_fn = GROUPS[group]

    def columns(old: Any, new: Any, grads: Any, lr: Any, ulps: Any) -> Any:
        per_leaf = [
            leaf_fn(o, n, g, lr, ulps) for o, n, g in zip(old, new, grads, strict=True)
        ]
        return {k: jnp.stack([p[k] for p in per_leaf]) for k in per_leaf[0]}

    return jax.jit(columns)


_PROGRAMS = {group: _program(group) for group in GROUPS}
_recent: list[Any] = []  # (group, weak refs to the leaves, lr, ulps, columns)
_RECENT = 4
"""Summaries kept: an example's update (three groups) and its trajectory's next step.
Held through weak references: a memo never keeps a model's arrays alive."""


def _refs(leaves: tuple[Any, ...]) -> tuple[Any, ...] | None:
    try:
        return tuple(weakref.ref(leaf) for leaf in leaves)
    except TypeError:  # Python scalars: not memoized
        return None


def update_summary(
    old: list[Any],
    new: list[Any],
    grads: list[Any],
    *,
    group: str,
    lr: float = 0.0,
    ulps: float = 0.0,
) -> dict[str, np.ndarray]:
    """The columns of ``group`` (see :data:`GROUPS`), one entry per leaf.

    ``old``, ``new`` and ``grads`` are lists of leaves in the same order. Memoized
    on the identity of the leaves (the last few calls): the update invariants of
    one example all summarise the same leaves.
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {list(GROUPS)}, got {group!r}")
    leaves = (*old, *new, *grads)
    for seen_group, seen, seen_lr, seen_ulps, columns in reversed(_recent):
        if (
            (seen_group, seen_lr, seen_ulps) == (group, lr, ulps)
            and len(seen) == len(leaves)
            and all(ref() is leaf for ref, leaf in zip(seen, leaves, strict=True))
        ):
            return columns  # type: ignore[no-any-return]
    if not old:
        return {}
    with compat.enable_x64():
        # lr and ulps as Python floats: weakly typed, so ``lr * |g|`` keeps the
        # gradient's dtype, as the step's own arithmetic does.
        out = _PROGRAMS[group](old, new, grads, float(lr), float(ulps))
        columns = {k: np.asarray(v) for k, v in jax.device_get(out).items()}
    refs = _refs(leaves)
    if refs is not None:
        _recent.append((group, refs, lr, ulps, columns))
        del _recent[:-_RECENT]
    return columns
