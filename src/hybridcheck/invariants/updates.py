"""What one update does to the params: exactly the graded leaves move, in a
descent direction, and by ``-lr * g`` for plain SGD.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import jax
import numpy as np

from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import (
    fail,
    index_str,
    paired_halves,
)
from hybridcheck.invariants._moved import (
    step_leaves,
    summarise,
    tx_updates,
)
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "SGD_ULPS",
    "FLAT_GRADIENT",
    "new_params",
    "assert_update_changes_exactly_graded_leaves",
    "assert_update_is_descent",
    "assert_sgd_update",
]

SGD_ULPS = 16.0
"""Tolerance of the exact SGD check, in ulps of ``|old| + lr * max|g|`` (two compiled
programs reduce in different orders)."""


FLAT_GRADIENT = 1e-12
"""``||g||^2`` below this (relative to the loss) is a flat point: no first order."""


def assert_update_changes_exactly_graded_leaves(
    old: Any,
    new: Any,
    grads: Any,
    *,
    lr: float,
    allow_change_without_grad: bool = False,
    expected: Any = None,
    moved_elsewhere: Collection[tuple[str, str]] = (),
    step: int = 1,
) -> None:
    """Leaves with a gradient that the update moves change; zero-gradient leaves do
    not.

    A leaf must change where the step's update of it is above float resolution (4
    ulp of the param, and above the smallest normal float: subnormal updates are
    flushed): the optimizer's own update of this step where ``expected`` gives it
    (a warmup step at lr 0 moves nothing), else ``lr * g`` (Adam and momentum move
    at least that far at step 1). A leaf with an identically zero gradient must
    stay put, unless ``allow_change_without_grad`` (weight decay, EMA).

    Args:
      old, new, grads: the params before and after the step, and the gradient at
        ``old``, by half.
      lr: the learning rate the step was given.
      allow_change_without_grad: a leaf may move without gradient.
      expected: the optimizer's own update of this step, by half (optional).
      moved_elsewhere: ``(half, leaf path)`` of leaves that another step of the
        same trajectory moves: a leaf left in place here but moved there waited
        for a warmup or a gate; it is not a dropped update.
      step: which step of a trajectory this is (named in the message from 2 on).
    """
    found = step_leaves(old, new, grads, lr=lr, expected=expected)
    at = f"step {step}: " if step != 1 else ""
    problems = [
        f"{at}half '{label}' leaf {path}: {what}"
        for label, path, what in found.unmoved
        if (label, path) not in moved_elsewhere
    ]
    if not allow_change_without_grad:
        problems += [
            f"{at}half '{label}' leaf {path}: gradient is zero but the leaf changed by "
            f"max {size:.3g}"
            for label, path, size in found.ungraded
        ]
    fail(
        "update_changes_exactly_graded_leaves",
        problems,
        "An unchanged leaf with a gradient means the step dropped that half's update "
        "(e.g. returned the old params for it); a changed leaf without gradient means "
        "the update is not driven by the gradient (pass allow_change_without_grad "
        "for weight decay).",
    )


def assert_update_is_descent(old: Any, new: Any, grads: Any) -> None:
    """Per half, the update points downhill: ``<new - old, -g> > 0`` where g != 0.

    Holds at the first step for SGD, momentum and Adam (elementwise the update has
    the sign of ``-g``); catches a sign error confined to one half.
    """
    problems = []
    paired_halves(old, grads, ("old", "grads"))  # the same halves, or a clear error
    triples, summary = summarise(old, new, grads, "descent")
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
    triples, summary = summarise(old, new, grads, "sgd", lr=lr, ulps=ulps)
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


def new_params(s: Subject, e: Example, name: str) -> Any:
    """The jitted step's new params, failing ``name`` if their tree is not the
    params' tree (rather than letting a leaf-by-leaf comparison crash on it)."""
    new = s.jitted_result(e)
    want, got = jax.tree.structure(e.params), jax.tree.structure(new)
    if str(want) != str(got):
        fail(
            name,
            [f"the step returned new params with tree {got}; the params have {want}"],
            "A step must return the params container with every half and leaf it "
            "was given (same nesting, same keys): a half dropped, returned twice or "
            "wrapped (e.g. {'params': ...} twice) breaks the next step.",
        )
    return new


def check_update_changes_exactly_graded_leaves(s: Subject, e: Example) -> None:
    old = s.trainable(e.params)
    new = s.trainable(new_params(s, e, "update_changes_exactly_graded_leaves"))
    # A declared optimizer may move leaves without gradient (decoupled weight
    # decay, adamw): update_matches_tx checks its exact update instead.
    allow = s.tx is not None
    try:
        assert_update_changes_exactly_graded_leaves(
            old, new, s.grads(e), lr=e.lr, allow_change_without_grad=allow
        )
    except AssertionError:
        # Only a failure pays for this: each step of the trajectory judged against
        # the optimizer's own update of that step (a warmup's first step at lr 0
        # need not move anything, its second must), a leaf left in place at one
        # step and moved at another excused (a gate, a warmup the case's tx does
        # not know).
        expected = tx_updates(s, e)
        points, grads = s.trajectory(e)
        trainable = [s.trainable(p) for p in points]
        moved = [
            step_leaves(a, b, g, lr=e.lr).moved
            for a, b, g in zip(trainable, trainable[1:], grads, strict=False)
        ]
        for k, g in enumerate(grads):
            assert_update_changes_exactly_graded_leaves(
                trainable[k],
                trainable[k + 1],
                g,
                lr=e.lr,
                allow_change_without_grad=allow or k > 0,
                expected=None if expected is None else expected[k],
                moved_elsewhere=set().union(*moved[:k], *moved[k + 1 :]),
                step=k + 1,
            )


def check_update_is_descent(s: Subject, e: Example) -> None:
    old = s.trainable(e.params)
    new = s.trainable(new_params(s, e, "update_is_descent"))
    assert_update_is_descent(old, new, s.grads(e))
    # A half the first step left in place (a warmup at lr 0, a gated half) is
    # judged at the first step of the trajectory that moves it.
    moved = step_leaves(old, new, s.grads(e), lr=e.lr).moved
    still = set(old) - {half for half, _ in moved}
    if not still:
        return
    points, grads = s.trajectory(e)
    for k in range(1, len(grads)):
        a, b = s.trainable(points[k]), s.trainable(points[k + 1])
        assert_update_is_descent(
            {h: a[h] for h in still},
            {h: b[h] for h in still},
            {h: grads[k][h] for h in still},
        )
        still -= {half for half, _ in step_leaves(a, b, grads[k], lr=e.lr).moved}
        if not still:
            return


def check_sgd_update(s: Subject, e: Example) -> None:
    assert_sgd_update(
        s.trainable(e.params),
        s.trainable(new_params(s, e, "sgd_update")),
        s.grads(e),
        lr=e.lr,
    )


# This family's rows of the registry (report order).
register(
    Invariant(
        "update_changes_exactly_graded_leaves",
        "a half or leaf with a gradient that the step leaves unchanged (default "
        "argnums, a half not updated, a closure, a stop_gradient); a leaf moved "
        "without gradient. Judged against the lr each step used (where the case "
        "names `tx`, the optimizer's own update: a warmup step at lr 0 moves "
        "nothing) and along the trajectory (a leaf that moves from step 2 waited for "
        "a warmup or a gate)",
        check_update_changes_exactly_graded_leaves,
        cost=("step", "grad", "reduce"),
    ),
    Invariant(
        "update_is_descent",
        "per half `<new - old, -g> > 0` (holds for SGD, momentum, Adam's first "
        "step): a sign error on one half; a half the first step leaves in place (lr "
        "0) is judged at the first step of the trajectory that moves it",
        check_update_is_descent,
        cost=("step", "grad", "reduce"),
    ),
    Invariant(
        "sgd_update",
        "for SGD steps, `new == old - lr·g` to 16 ulp, leaf by leaf",
        check_sgd_update,
        needs_sgd=True,
        cost=("step", "grad", "reduce"),
    ),
)
