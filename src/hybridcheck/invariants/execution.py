"""Invariants about how a step executes: jit, devices, repeats, finiteness, traces."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from hybridcheck._typing import PyTree
from hybridcheck.invariants._tree import fail, index_str, leaves

__all__ = [
    "JIT_EAGER_TOL",
    "SHARDED_TOL",
    "step_order_problems",
    "assert_jit_matches_eager",
    "assert_sharded_matches_single_device",
    "assert_deterministic",
    "assert_all_finite",
    "assert_inputs_unchanged",
    "assert_retrace_budget",
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
        e_, a_ = np.asarray(e, np.float64), np.asarray(a, np.float64)
        if e_.shape != a_.shape:
            problems.append(
                f"{path}: {names[0]} shape {e_.shape} vs {names[1]} {a_.shape}"
            )
            continue
        bad = ~np.isclose(a_, e_, rtol=rtol, atol=leaf_atol, equal_nan=True)
        if np.any(bad):
            i = tuple(np.argwhere(bad)[0])
            problems.append(
                f"{path}{index_str(i)}: {names[0]}={e_[i]:.8g}, "
                f"{names[1]}={a_[i]:.8g} (rtol={rtol:g}, atol={leaf_atol:.3g})"
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
        atols = [
            atol
            + update_tol
            * float(
                np.max(
                    np.abs(np.asarray(x, np.float64) - np.asarray(o, np.float64)),
                    initial=0.0,
                )
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


def assert_jit_matches_eager(
    eager: PyTree,
    jitted: PyTree,
    *,
    rtol: float = JIT_EAGER_TOL["rtol"],
    atol: float = JIT_EAGER_TOL["atol"],
    old: PyTree = None,
    update_tol: float = JIT_EAGER_TOL["update_tol"],
    losses: tuple[float, float, float] | None = None,
    loss_rtol: float = JIT_EAGER_TOL["loss_rtol"],
    loss_atol: float = JIT_EAGER_TOL["loss_atol"],
) -> None:
    """Eager and jitted results of a step agree.

    Never bitwise: XLA fuses and reorders reductions (about 1 ulp apart on
    JAX >= 0.5). Each leaf must agree to ``rtol``/``atol``; with ``old`` (the params
    before the step) a leaf may also differ by ``update_tol`` times its largest
    update, because normalising optimizers (Adam at step 1: ``g / (|g| + eps)``)
    amplify rounding in gradient entries near ``eps``. With ``losses`` =
    ``(before, after_eager, after_jit)`` the two losses after the step must agree
    to ``loss_rtol`` (1%) of the decrease plus ``loss_atol * (1 + |before|)``: the
    observable that a baked-in Python value changes.
    """
    problems = step_order_problems(
        eager,
        jitted,
        ("eager", "jit"),
        rtol=rtol,
        atol=atol,
        old=old,
        update_tol=update_tol,
        losses=losses,
        loss_rtol=loss_rtol,
        loss_atol=loss_atol,
    )
    fail(
        "jit_matches_eager",
        problems,
        "The step depends on Python-side state (a counter, a global, a cached array, "
        "host randomness) that jit bakes in at trace time, or it branches on values.",
    )


def assert_sharded_matches_single_device(
    single: PyTree,
    sharded: PyTree,
    *,
    rtol: float = SHARDED_TOL["rtol"],
    atol: float = SHARDED_TOL["atol"],
) -> None:
    """The step run data-parallel over several devices equals the one-device run.

    Tolerances as for jit vs eager: the batch mean is reduced across devices in a
    different order. Pass float64 runs where the model is ill-conditioned (see
    ``checks.check_sharded_matches_single_device``): float32 rounding differences
    can be amplified.
    """
    fail(
        "sharded_matches_single_device",
        _close_problems(single, sharded, ("single-device", "sharded"), rtol, atol),
        "The step is not batch-size-agnostic under sharding: a sum where a mean is "
        "meant (per-shard mean without a cross-device mean), batch statistics taken "
        "per shard, or a per-device RNG.",
    )


def assert_deterministic(first: PyTree, second: PyTree) -> None:
    """Two runs on the same inputs gave bitwise-equal outputs."""
    problems = []
    first_leaves, second_leaves = leaves(first), leaves(second)
    for (path, a), (_, b) in zip(first_leaves, second_leaves, strict=False):
        a_, b_ = np.asarray(a), np.asarray(b)
        if a_.shape != b_.shape or not np.array_equal(a_, b_, equal_nan=True):
            diff = (
                np.max(np.abs(a_.astype(np.float64) - b_.astype(np.float64)))
                if a_.shape == b_.shape
                else "shape"
            )
            problems.append(f"{path}: runs differ (max |diff| = {diff})")
    if len(first_leaves) != len(second_leaves):
        problems.append("the two runs returned different tree structures")
    fail(
        "deterministic",
        problems,
        "Same params, batch and lr must give the same bits. Look for host randomness "
        "(numpy/random without a fixed key), a PRNG key that is not an input, or "
        "state carried between calls.",
    )


def assert_all_finite(tree: PyTree, *, what: str = "outputs") -> None:
    """Every leaf of ``tree`` is finite (no NaN/Inf)."""
    problems = []
    for path, leaf in leaves(tree):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            n_bad = int(np.sum(~np.isfinite(arr)))
            problems.append(f"{what}{path}: {n_bad} of {arr.size} values are NaN/Inf")
    fail(
        "all_finite",
        problems,
        "NaN/Inf after one step on finite inputs: a division by zero, log/sqrt of 0, "
        "an overflowing lr, or an uninitialised (NaN) variable.",
    )


def assert_inputs_unchanged(snapshot: PyTree, inputs: PyTree) -> None:
    """Inputs still hold the values of ``snapshot`` (a NumPy copy made before the
    step) and none of their buffers was donated/deleted."""
    problems = []
    for (path, s), (_, leaf) in zip(leaves(snapshot), leaves(inputs), strict=False):
        if isinstance(leaf, jax.Array) and leaf.is_deleted():
            problems.append(f"input{path}: buffer was deleted (donated to the step)")
            continue
        if not np.array_equal(np.asarray(s), np.asarray(leaf), equal_nan=True):
            problems.append(f"input{path}: value changed during the step")
    fail(
        "inputs_unchanged",
        problems,
        "The step mutated or donated its inputs. Callers (and the loss before/after "
        "comparison) keep using them: copy before in-place NumPy ops, and do not "
        "donate_argnums arrays the caller still owns.",
    )


def assert_retrace_budget(traces: int, budget: int, *, what: str = "step") -> None:
    """``traces`` (from :class:`hybridcheck.tracing.TraceCounter`) <= ``budget``."""
    if traces > budget:
        fail(
            "retrace_budget",
            [f"{what} traced {traces} times, budget is {budget} (one per input shape)"],
            "Something that should be a traced value is a Python constant baked into "
            "the trace (lr or seed passed as a Python float/int to a static argument, "
            "a Python scalar in the batch), or shapes vary more than expected.",
        )
