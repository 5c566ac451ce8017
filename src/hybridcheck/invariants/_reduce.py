"""Per-leaf summaries of one update, reduced on the device in one compiled program.

The update invariants compare the params before and after a step with the gradient,
leaf by leaf. Copying every leaf to the host in float64 costs several passes over the
model per example and invariant, which at millions of parameters costs more than the
step itself. Here one fused program per tree structure returns a few scalars per
leaf (in float64 where they accumulate), shared by every update invariant of the
example; the host looks at the elements of a leaf only when its summary flags it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat

__all__ = ["UpdateSummary", "update_summary", "ulp_floor"]


class UpdateSummary(NamedTuple):
    """One entry per leaf, in ``jax.tree.leaves`` order of the old params.

    Attributes:
      changed: some element of the leaf differs between old and new.
      visible: some element has ``lr * |g|`` above :func:`ulp_floor` of the param: a
        first-order step must move it.
      graded: some element of the gradient is nonzero.
      max_grad: ``max |g|``.
      max_update: ``max |new - old|``.
      inner: ``<new - old, -g>`` accumulated in float64.
      grad_sq: ``||g||^2`` accumulated in float64.
      sgd_excess: ``max(|new - (old - lr g)| - tol)`` in float64, with ``tol`` the
        exact-SGD tolerance (``ulps`` ulp of ``|old| + lr max|g|``); > 0 means the
        leaf is no SGD step.
    """

    changed: np.ndarray
    visible: np.ndarray
    graded: np.ndarray
    max_grad: np.ndarray
    max_update: np.ndarray
    inner: np.ndarray
    grad_sq: np.ndarray
    sgd_excess: np.ndarray


def ulp_floor(p: Any) -> Any:
    """The smallest update a float step is sure to apply to ``p``: 4 ulp of ``p``,
    and at least 2 x the smallest normal number, because XLA flushes subnormal
    results to zero on CPU (``0 - 1e-3 * 1e-37 == -0.0`` under jit). Works on NumPy
    and JAX arrays alike."""
    dtype = p.dtype if jnp.issubdtype(p.dtype, jnp.floating) else np.float32
    finfo = jnp.finfo(dtype)
    return jnp.maximum(4 * finfo.eps * jnp.abs(p), 2 * finfo.tiny)


def _leaf(o: Any, n: Any, g: Any, lr: Any, ulps: Any) -> list[Any]:
    f64 = jnp.float64
    o64, n64, g64 = (x.astype(f64) for x in (o, n, g))
    floating = jnp.issubdtype(o.dtype, jnp.floating)
    eps = float(jnp.finfo(o.dtype).eps) if floating else 0.0
    g_scale = jnp.max(jnp.abs(g64), initial=0.0)
    tol = ulps * eps * (jnp.abs(o64) + lr * g_scale) + float(np.finfo(np.float32).tiny)
    return [
        jnp.any(o != n),
        jnp.any(lr * jnp.abs(g) > ulp_floor(o)),
        jnp.any(g != 0),
        g_scale,
        jnp.max(jnp.abs(n64 - o64), initial=0.0),
        jnp.sum((n64 - o64) * -g64),
        jnp.sum(jnp.square(g64)),
        jnp.max(jnp.abs(n64 - (o64 - lr * g64)) - tol, initial=-np.inf),
    ]


@jax.jit
def _summaries(old: Any, new: Any, grads: Any, lr: Any, ulps: Any) -> list[Any]:
    per_leaf = [
        _leaf(o, n, g, lr, ulps)
        for o, n, g in zip(
            jax.tree.leaves(old),
            jax.tree.leaves(new),
            jax.tree.leaves(grads),
            strict=True,
        )
    ]
    return [jnp.stack(column) for column in zip(*per_leaf, strict=True)]


_recent: list[Any] = []  # (leaves, lr, ulps, summary), newest last
_RECENT = 4
"""Summaries kept: an example's update and its trajectory's few steps."""


def update_summary(
    old: Any, new: Any, grads: Any, *, lr: float | None, ulps: float
) -> UpdateSummary:
    """The :class:`UpdateSummary` of one update (trees of equal structure).

    ``lr=None``: the caller reads only the columns that do not depend on ``lr``
    (``changed``, ``graded``, ``max_*``, ``inner``, ``grad_sq``). Memoized on the
    identity of the leaves (the last few calls): the update invariants of one
    example all summarise the same trees.
    """
    leaves = tuple(jax.tree.leaves((old, new, grads)))
    for seen, seen_lr, seen_ulps, summary in reversed(_recent):
        if (
            (lr is None or seen_lr == lr)
            and seen_ulps == ulps
            and len(seen) == len(leaves)
            and all(a is b for a, b in zip(seen, leaves, strict=True))
        ):
            return summary  # type: ignore[no-any-return]
    if not leaves:
        empty = np.zeros((0,))
        return UpdateSummary(*(empty,) * len(UpdateSummary._fields))
    with compat.enable_x64():
        # lr and ulps as Python floats: weakly typed, so ``lr * |g|`` keeps the
        # gradient's dtype, as the step's own arithmetic does.
        lr_value = 0.0 if lr is None else float(lr)
        columns = jax.device_get(_summaries(old, new, grads, lr_value, float(ulps)))
    summary = UpdateSummary(*(np.asarray(c) for c in columns))
    _recent.append((leaves, lr, ulps, summary))
    del _recent[:-_RECENT]
    return summary
