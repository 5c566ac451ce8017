"""Invariants about the update a step applies: which leaves move, where, how far."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hybridcheck.invariants._reduce import update_summary
from hybridcheck.invariants._tree import (
    InvariantNotApplicable,
    fail,
    index_str,
    leaf_triples,
    paired_halves,
)

__all__ = [
    "FIRST_ORDER_LRS",
    "SMALLEST_LR",
    "FIRST_ORDER_RTOL",
    "SGD_ULPS",
    "assert_update_changes_exactly_graded_leaves",
    "assert_loss_decrease_first_order",
    "assert_update_is_descent",
    "assert_sgd_update",
]

FIRST_ORDER_LRS: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
"""Step sizes at which the first-order ratio is measured, largest first."""
SMALLEST_LR = min(FIRST_ORDER_LRS)
"""The smallest of them: the first-order check's kink probe steps this far, so a
kink it does not see cannot spoil any of the ratios."""
FIRST_ORDER_RTOL = 1e-2
"""How close to 1 the best first-order ratio must be (float64: truncation only)."""
SGD_ULPS = 16.0
"""Tolerance of the exact SGD check, in ulps of ``|old| + lr * max|g|`` (two compiled
programs reduce in different orders)."""
FLAT_GRADIENT = 1e-12
"""``||g||^2`` below this (relative to the loss) is a flat point: no first order."""


def _summarise(
    old: Any, new: Any, grads: Any, group: str, **kwargs: float
) -> tuple[list[tuple[str, str, Any, Any, Any]], dict[str, np.ndarray]]:
    """The leaves ``(half, path, old, new, grad)`` and their on-device summary
    (the columns of ``group``, see :mod:`hybridcheck.invariants._reduce`)."""
    # Halves in label order: a container's order varies (a dict that went through
    # jit comes back sorted), and one order means one compiled summary.
    triples = sorted(leaf_triples(old, new, grads), key=lambda t: t[0])
    old_, new_, grads_ = ([t[k] for t in triples] for k in (2, 3, 4))
    return triples, update_summary(old_, new_, grads_, group=group, **kwargs)


def assert_update_changes_exactly_graded_leaves(
    old: Any,
    new: Any,
    grads: Any,
    *,
    lr: float,
    allow_change_without_grad: bool = False,
) -> None:
    """Leaves with an SGD-visible gradient change; zero-gradient leaves do not.

    "SGD-visible": some element has ``lr * |g|`` above 4 ulp of the param (and above
    the smallest normal float: subnormal updates are flushed), so a first-order
    step must move it (Adam/momentum move it even more at step 1). A leaf
    with an identically zero gradient must stay put, unless
    ``allow_change_without_grad`` (weight decay, EMA).
    """
    problems = []
    triples, summary = _summarise(old, new, grads, "moves", lr=lr)
    for i, (label, path, *_) in enumerate(triples):
        changed, visible = summary["changed"][i], summary["visible"][i]
        if visible and not changed:
            problems.append(
                f"half '{label}' leaf {path}: gradient max|g|="
                f"{float(summary['max_grad'][i]):.3g} (lr={lr:g}) but the leaf did "
                "not change"
            )
        if not allow_change_without_grad and not summary["graded"][i] and changed:
            problems.append(
                f"half '{label}' leaf {path}: gradient is zero but the leaf "
                f"changed by max {float(summary['max_update'][i]):.3g}"
            )
    fail(
        "update_changes_exactly_graded_leaves",
        problems,
        "An unchanged leaf with a gradient means the step dropped that half's update "
        "(e.g. returned the old params for it); a changed leaf without gradient means "
        "the update is not driven by the gradient (pass allow_change_without_grad "
        "for weight decay).",
    )


def assert_loss_decrease_first_order(
    loss_at: Callable[[float], float],
    grad_sq_norm: float,
    *,
    lrs: Sequence[float] = FIRST_ORDER_LRS,
    rtol: float = FIRST_ORDER_RTOL,
    loss_scale: float = 1.0,
) -> None:
    """``(L(0) - L(lr)) / (lr * ||g||^2) -> 1`` as ``lr -> 0``, for an SGD step.

    ``loss_at(lr)`` is the loss after one step of size ``lr`` (``loss_at(0.0)`` the
    loss before). Evaluate it in float64 (``compat.enable_x64``). The ratio tends to 1
    exactly when the step moves every half along ``-g``; updating one half gives
    ``||g_half||^2 / ||g||^2 < 1``, a sign error gives ``< 0``, so a bare "the loss
    went down" check misses what this one catches. Passes as soon as a ratio, taken
    over ``lrs`` in order (largest first: the cheapest to resolve in floats), is
    within ``rtol`` of 1; fails if none is.

    Raises:
      InvariantNotApplicable: when ``||g||^2`` is too small for the ratio to be
        measured (a flat point), relative to ``loss_scale``.
    """
    if not lrs or any(not (lr > 0) for lr in lrs):
        raise ValueError(f"lrs must be positive learning rates, got {list(lrs)}")
    if not math.isfinite(grad_sq_norm) or grad_sq_norm <= FLAT_GRADIENT * max(
        1.0, loss_scale
    ):
        raise InvariantNotApplicable(
            f"||g||^2 = {grad_sq_norm:.3g}: gradient vanishes, first order says nothing"
        )
    before = float(loss_at(0.0))
    ratios = []
    for lr in lrs:  # largest first; the first ratio within rtol settles it
        ratios.append((before - float(loss_at(lr))) / (lr * grad_sq_norm))
        if math.isfinite(ratios[-1]) and abs(ratios[-1] - 1.0) <= rtol:
            return
    shown = ", ".join(f"lr={lr:g}: {r:.4g}" for lr, r in zip(lrs, ratios, strict=True))
    fail(
        "loss_decrease_first_order",
        [
            f"(loss_before - loss_after) / (lr * ||g||^2) should tend to 1; got "
            f"{shown} (loss_before={before:.6g}, ||g||^2={grad_sq_norm:.6g}, "
            f"rtol={rtol:g})"
        ],
        "A ratio near ||g_half||^2/||g||^2 means only one half is updated; a "
        "negative ratio means a sign error (p + lr*g); a ratio that scales with lr "
        "means the step size is not lr.",
    )


def assert_update_is_descent(old: Any, new: Any, grads: Any) -> None:
    """Per half, the update points downhill: ``<new - old, -g> > 0`` where g != 0.

    Holds at the first step for SGD, momentum and Adam (elementwise the update has
    the sign of ``-g``); catches a sign error confined to one half.
    """
    problems = []
    paired_halves(old, grads, ("old", "grads"))  # the same halves, or a clear error
    triples, summary = _summarise(old, new, grads, "descent")
    for label in dict.fromkeys(t[0] for t in triples):
        mine = [i for i, t in enumerate(triples) if t[0] == label]
        grad_sq = float(np.sum(summary["grad_sq"][mine]))
        # No gradient: nothing to descend. Not moved at all: a dropped update, which
        # update_changes_exactly_graded_leaves reports (or an update below float
        # resolution, which is no error).
        if grad_sq == 0.0 or not np.any(summary["changed"][mine]):
            continue
        inner = float(np.sum(summary["inner"][mine]))
        if not inner > 0.0:
            problems.append(
                f"half '{label}': <new - old, -grad> = {inner:.4g}, must be > 0 "
                f"(||grad||^2 = {grad_sq:.4g})"
            )
    fail(
        "update_is_descent",
        problems,
        "The update of that half does not go downhill: a sign error (p + lr*g), or "
        "the update applied to the wrong half's gradient.",
    )


def assert_sgd_update(
    old: Any, new: Any, grads: Any, *, lr: float, ulps: float = SGD_ULPS
) -> None:
    """``new == old - lr * grads`` leaf by leaf, to ``ulps`` ulps of the operands.

    The tolerance per element is ``ulps * eps * (|old| + lr * max|grads of the
    leaf|)``: ``grads`` usually comes from another compiled program than the step's
    own gradient, and two programs reduce in different orders, agreeing to a few ulp
    of the leaf's largest gradient entry, not of each (possibly cancelled) entry.
    """
    problems = []
    triples, summary = _summarise(old, new, grads, "sgd", lr=lr, ulps=ulps)
    for k, (label, path, ol, nl, gl) in enumerate(triples):
        if not summary["sgd_excess"][k] > 0:  # the device found no element off
            continue
        # The flagged leaf on the host: which element, by how much.
        ol_, nl_, gl_ = (np.asarray(a) for a in (ol, nl, gl))
        expected = ol_.astype(np.float64) - lr * gl_.astype(np.float64)
        eps = np.finfo(ol_.dtype).eps if np.issubdtype(ol_.dtype, np.floating) else 0
        g_scale = float(np.max(np.abs(gl_), initial=0.0))
        tol = ulps * eps * (np.abs(ol_) + lr * g_scale) + np.finfo(np.float32).tiny
        err = np.abs(nl_.astype(np.float64) - expected)
        if np.any(err > tol):
            i = np.unravel_index(int(np.argmax(err - tol)), err.shape)
            problems.append(
                f"half '{label}' leaf {path}{index_str(i)}: new="
                f"{float(nl_[i]):.8g}, old - lr*grad={float(expected[i]):.8g} "
                f"(|diff|={float(err[i]):.3g} > tol {float(tol[i]):.3g})"
            )
    fail(
        "sgd_update",
        problems,
        f"An SGD step must be p - lr*g with lr={lr:g} on every leaf of every half.",
    )
