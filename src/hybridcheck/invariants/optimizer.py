"""The optimizer as declared: every trainable leaf is trained along a few steps, and
the steps equal the case's optax ``tx`` with its state threaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from hybridcheck import compat
from hybridcheck.describe.subject import TRAJECTORY_STEPS, Example, Subject, to64
from hybridcheck.describe.trees import (
    InvariantNotApplicable,
    fail,
    index_str,
    leaf_triples,
)
from hybridcheck.invariants._conditioning import loss_precision
from hybridcheck.invariants._moved import step_leaves, tx_updates
from hybridcheck.invariants._precision import PRECISION_ULPS
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "TX_TOL",
    "assert_every_trainable_is_trained",
    "assert_update_matches_tx",
]

TX_TOL: dict[str, float] = {"rtol": 1e-6, "atol": 1e-9, "update_tol": 1e-6}
"""float64 replays of the same optimizer math: agreement to ~1e-12 is expected; the
slack covers gradients that are cancellation noise (Adam divides by |g| + eps)."""


def assert_every_trainable_is_trained(
    trajectory: Sequence[Any],
    grads: Sequence[Any],
    *,
    lr: float,
    frozen: Callable[[str, str], bool] | None = None,
    expected: Sequence[Any] | None = None,
) -> None:
    """Along a few consecutive steps, every trainable leaf with a gradient moves.

    Args:
      trajectory: the trainable params ``p0, p1, ..., pK`` of K consecutive steps of
        the step under test, by half.
      grads: the gradients ``g0, ..., g(K-1)`` at ``p0, ..., p(K-1)``, by half.
      lr: the learning rate of the steps.
      frozen: ``frozen(half, leaf_path) -> bool`` for leaves frozen on purpose.
      expected: per step, the optimizer's own update (by half): a step must move
        a leaf where that update does (a warmup step at lr 0 need not); without
        it, where ``lr * g`` does.

    A leaf fails when some step had to move it and *no* step of the trajectory
    moves it: a leaf left in place at step 1 and moved at step 2 waited for a
    warmup or a gate (a linear probe's frozen encoder, a zero-initialised scale).
    One step from initialisation is not enough: with LoRA's ``lora_b = 0`` the
    gradient of ``lora_a`` is exactly zero at the first step and nonzero from the
    second, so a step that leaves ``lora_a`` out shows only along the trajectory.
    """
    if len(trajectory) != len(grads) + 1 or not grads:
        raise ValueError(
            f"trajectory must hold one more point than grads (K >= 1 steps), got "
            f"{len(trajectory)} points and {len(grads)} gradients"
        )
    if expected is not None and len(expected) != len(grads):
        raise ValueError(
            f"expected must hold one update per step ({len(grads)}), got "
            f"{len(expected)}"
        )
    unmoved: dict[tuple[str, str], str] = {}
    moved: set[tuple[str, str]] = set()
    for i, g in enumerate(grads):
        found = step_leaves(
            trajectory[i],
            trajectory[i + 1],
            g,
            lr=lr,
            expected=None if expected is None else expected[i],
        )
        moved |= found.moved
        for label, path, what in found.unmoved:
            if not (frozen and frozen(label, path)):
                unmoved.setdefault(
                    (label, path), f"step {i + 1}: half '{label}' leaf {path}: {what}"
                )
    problems = [text for leaf, text in unmoved.items() if leaf not in moved]
    fail(
        "every_trainable_is_trained",
        problems,
        "A trainable leaf (an nnx.Param or subclass such as nnx.LoRAParam, a Linen "
        "'params' leaf) got a gradient but no step of the trajectory updated it: it "
        "is left out of the optimizer (nnx.Optimizer(wrt=...) or a filter that misses "
        "it) or out of the differentiated arguments.",
    )


def assert_update_matches_tx(
    expected: Sequence[Any],
    actual: Sequence[Any],
    old: Sequence[Any],
    *,
    rtol: float = TX_TOL["rtol"],
    atol: float = TX_TOL["atol"],
    update_tol: float = TX_TOL["update_tol"],
    frozen: Callable[[str, str], bool] | None = None,
) -> None:
    """Each of a few consecutive steps equals the case's optax ``tx`` applied to the
    gradient, with the optimizer state threaded from step to step.

    Args:
      expected: per step, ``p + tx.update(g, state, p)`` (trainable, by half).
      actual: per step, the step under test's result (trainable, by half).
      old: per step, the params the step started from.
      frozen: ``frozen(half, leaf_path)`` for leaves frozen on purpose: left out
        of the user's optimizer (``wrt``), so ``tx``'s weight decay of them is not
        compared (``update_changes_exactly_graded_leaves`` keeps them in place).
    """
    problems = []
    for step, (e, a, o) in enumerate(zip(expected, actual, old, strict=True)):
        for label, path, el, al, ol in leaf_triples(e, a, o):
            if frozen and frozen(label, path):
                continue
            e_, a_, o_ = (np.asarray(x, np.float64) for x in (el, al, ol))
            scale = float(np.max(np.abs(e_ - o_), initial=0.0))
            bad = ~np.isclose(a_, e_, rtol=rtol, atol=atol + update_tol * scale)
            if np.any(bad):
                i = tuple(np.argwhere(bad)[0])
                problems.append(
                    f"step {step + 1}: half '{label}' leaf {path}{index_str(i)}: "
                    f"step gave {a_[i]:.10g}, tx gives {e_[i]:.10g} (update "
                    f"{e_[i] - o_[i]:.4g})"
                )
    fail(
        "update_matches_tx",
        problems,
        "The step does not apply the optimizer it declares: a different "
        "hyperparameter (lr, betas, eps, weight decay), the optimizer state not "
        "threaded between steps (re-initialised each step), a schedule that does not "
        "advance, or gradients transformed before the optimizer.",
    )


def check_every_trainable_is_trained(s: Subject, e: Example) -> None:
    points, grads = s.trajectory(e)
    trainable = [s.trainable(p) for p in points]
    try:
        assert_every_trainable_is_trained(trainable, grads, lr=e.lr, frozen=s.frozen)
    except AssertionError:
        # Only a failure pays for the optimizer's own updates (a warmup longer
        # than the trajectory moves nothing, and must not).
        expected = tx_updates(s, e)
        if expected is None:
            raise
        assert_every_trainable_is_trained(
            trainable, grads, lr=e.lr, frozen=s.frozen, expected=expected
        )


def check_update_matches_tx(s: Subject, e: Example) -> None:
    import optax

    if s.tx is None:
        raise InvariantNotApplicable("the case has no tx")
    with compat.enable_x64():
        batch, lr = to64(e.batch), jnp.float64(e.lr)
        points = [to64(e.params)]
        for _ in range(TRAJECTORY_STEPS):
            points.append(s.step64(points[-1], batch, lr))
        tx = s.tx(e.lr)
        state = tx.init(s.trainable(points[0]))
        expected = []
        for p in points[:-1]:
            train = s.trainable(p)
            updates, state = tx.update(s.grad_fn(p, batch), state, train)
            expected.append(optax.apply_updates(train, updates))
        # the step and tx's update of the same gradient round alike only in
        # float64: a model that runs in bf16 inside the replay (explicit dtype=,
        # a compute dtype) is judged in that precision's rounding steps
        precision = loss_precision(s, e)
        update_tol = max(TX_TOL["update_tol"], PRECISION_ULPS * precision.eps)
        try:
            assert_update_matches_tx(
                expected,
                [s.trainable(p) for p in points[1:]],
                [s.trainable(p) for p in points[:-1]],
                frozen=s.frozen,
                update_tol=update_tol,
            )
        except AssertionError as err:
            if precision.full:
                raise
            note = f"Judged in {precision.describe()}."
            raise AssertionError(f"{err}\n  {note}") from None


# This family's rows of the registry (report order).
register(
    Invariant(
        "every_trainable_is_trained",
        "along a few consecutive steps, a trainable leaf (nnx.Param or subclass such "
        "as LoRAParam, Linen `params`) with a gradient that no step updates although "
        "one had to (left out of the optimizer's `wrt` or of the differentiated "
        "arguments)",
        check_every_trainable_is_trained,
        cost=("trajectory", "reduce"),
    ),
    Invariant(
        "update_matches_tx",
        "where the case names its optax `tx`: a few consecutive steps differ from "
        "`tx` applied to the gradients with its state threaded (a hyperparameter "
        "changed, state re-initialised each step, a schedule that does not advance)",
        check_update_matches_tx,
        needs_field="tx",
        cost=("float64",),
    ),
)
