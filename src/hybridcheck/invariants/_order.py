"""Comparing two results of the same math computed in another order (jit vs eager,
sharded vs one device): the tolerances and the leaf-by-leaf comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat
from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.trees import (
    index_str,
    leaves,
)

__all__ = [
    "JIT_EAGER_TOL",
    "SHARDED_TOL",
    "step_order_problems",
]

# Default tolerances of the two "same math, another order" comparisons. The checks
# quarter them to decide whether an example is too ill-conditioned to compare at all.
JIT_EAGER_TOL: dict[str, float] = {
    # float32 results of two reduction orders: ~1e-7 relative; 1e-4 leaves headroom
    # for accumulation over a few hundred terms.
    "rtol": 1e-4,
    # for entries near zero, where relative error is meaningless.
    "atol": 1e-5,
    # a leaf may differ by 5% of its largest update: normalising optimizers (Adam at
    # step 1, g / (|g| + eps)) amplify rounding in gradient entries near eps.
    "update_tol": 0.05,
    # the loss after the step: 1% of the decrease (the observable a baked-in Python
    # value changes) ...
    "loss_rtol": 0.01,
    # ... plus 1e-6 of the loss, for steps that barely move it.
    "loss_atol": 1e-6,
}


SHARDED_TOL: dict[str, float] = {"rtol": 1e-4, "atol": 1e-5}
"""As for jit vs eager: the batch mean is reduced across devices in another order."""


@jax.jit
def _first_far(e: Any, a: Any, rtol: Any, atol: Any) -> tuple[Any, Any]:
    """On the device, in float64: whether some entry of ``a`` is not close to
    ``e`` (``np.isclose``, NaNs equal), and the first such flat index."""
    bad = ~jnp.isclose(
        jnp.ravel(a).astype(jnp.float64),
        jnp.ravel(e).astype(jnp.float64),
        rtol=rtol,
        atol=atol,
        equal_nan=True,
    )
    i = jnp.argmax(bad)  # the first True, 0 when there is none
    return bad[i], i


@jax.jit
def _max_abs_diff(x: Any, o: Any) -> Any:
    """``max |x - o|`` in float64, 0 for an empty leaf."""
    d = jnp.abs(jnp.ravel(x).astype(jnp.float64) - jnp.ravel(o).astype(jnp.float64))
    return jnp.max(d, initial=0.0)


def _as_array(x: Any) -> Any:
    """A leaf for the device comparisons (a NumPy or Python scalar as an array)."""
    return x if isinstance(x, jax.Array) else np.asarray(x)


def _close_problems(
    expected: PyTree,
    actual: PyTree,
    names: tuple[str, str],
    rtol: float,
    atol: float | Sequence[float],
) -> list[str]:
    problems = []
    e_leaves, a_leaves = leaves(expected), leaves(actual)
    atols = [atol] * len(e_leaves) if isinstance(atol, float | int) else list(atol)
    if len(e_leaves) != len(a_leaves):
        problems.append(
            f"{len(e_leaves)} {names[0]} leaves vs {len(a_leaves)} {names[1]} leaves"
        )
    for (path, e), (_, a), leaf_atol in zip(e_leaves, a_leaves, atols, strict=False):
        if np.shape(e) != np.shape(a):
            problems.append(
                f"{path}: {names[0]} shape {np.shape(e)} vs {names[1]} {np.shape(a)}"
            )
            continue
        if not np.isfinite(leaf_atol):  # a non-finite update: all_finite's finding
            leaf_atol = 0.0
        if not np.size(e):
            continue
        # Compared on the device: a model's leaves never cross to the host whole.
        with compat.enable_x64():
            far, flat = jax.device_get(
                _first_far(_as_array(e), _as_array(a), float(rtol), float(leaf_atol))
            )
        if far:
            i = tuple(int(k) for k in np.unravel_index(int(flat), np.shape(e)))
            e_i, a_i = (float(np.asarray(x, np.float64)[i]) for x in (e, a))
            problems.append(
                f"{path}{index_str(i)}: {names[0]}={e_i:.8g}, "
                f"{names[1]}={a_i:.8g} (rtol={rtol:g}, atol={leaf_atol:.3g})"
            )
    return problems


def step_order_problems(
    a: PyTree,
    b: PyTree,
    names: tuple[str, str],
    *,
    rtol: float,
    atol: float,
    old: PyTree = None,
    update_tol: float = 0.0,
    losses: tuple[float, float, float] | None = None,
    loss_rtol: float = 0.0,
    loss_atol: float = 0.0,
) -> list[str]:
    """What differs between two results of one step (see the jit/eager assertion)."""
    atols: float | list[float] = atol
    if old is not None:
        with compat.enable_x64():
            atols = [
                atol
                + update_tol
                * (
                    float(_max_abs_diff(_as_array(x), _as_array(o)))
                    if np.shape(x) == np.shape(o)
                    else 0.0
                )
                for o, x in zip(jax.tree.leaves(old), jax.tree.leaves(a), strict=False)
            ]
    problems = _close_problems(a, b, names, rtol, atols)
    if losses is not None:
        before, after_a, after_b = losses
        allowed = loss_rtol * abs(before - after_a) + loss_atol * (1.0 + abs(before))
        if not abs(after_a - after_b) <= allowed:
            problems.append(
                f"loss after the step: {names[0]}={after_a:.8g}, "
                f"{names[1]}={after_b:.8g} (before={before:.8g}; "
                f"allowed |diff| {allowed:.3g})"
            )
    return problems
