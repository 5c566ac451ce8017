"""The loss decreases to first order for small lr:
``(L0 - L(lr)) / (lr |g|^2) -> 1``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from hybridcheck import compat
from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import (
    InvariantNotApplicable,
    fail,
)
from hybridcheck.invariants._precision import (
    FLOAT64,
    Precision,
    precision_note,
    replay_precision,
    rounding_noise,
)
from hybridcheck.invariants.registry import Invariant, register
from hybridcheck.invariants.updates import FLAT_GRADIENT

__all__ = [
    "FIRST_ORDER_LRS",
    "SMALLEST_LR",
    "FIRST_ORDER_RTOL",
    "KINK_JUMP",
    "FIRST_ORDER_NOISE_UNITS",
    "FIRST_ORDER_NOISE_SHARE",
    "assert_loss_decrease_first_order",
]

FIRST_ORDER_LRS: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
"""Step sizes at which the first-order ratio is measured, largest first."""


SMALLEST_LR = min(FIRST_ORDER_LRS)
"""The smallest of them: the first-order check's kink probe steps this far, so a
kink it does not see cannot spoil any of the ratios."""


FIRST_ORDER_RTOL = 1e-2
"""How close to 1 the best first-order ratio must be (float64: truncation only)."""


FIRST_ORDER_NOISE_UNITS = 4.0
"""In less than float64, a ratio may also be off by this many times the loss's
measured rounding noise over the decrease it measures (``noise / (lr ||g||^2)``)."""


FIRST_ORDER_NOISE_SHARE = 0.25
"""A learning rate whose noise allowance exceeds this cannot tell a wrong step from
rounding: its ratio is skipped."""


def assert_loss_decrease_first_order(
    loss_at: Callable[[float], float],
    grad_sq_norm: float,
    *,
    lrs: Sequence[float] = FIRST_ORDER_LRS,
    rtol: float = FIRST_ORDER_RTOL,
    loss_scale: float = 1.0,
    noise: float = 0.0,
    precision: Precision = FLOAT64,
) -> None:
    """``(L(0) - L(lr)) / (lr * ||g||^2) -> 1`` as ``lr -> 0``, for an SGD step.

    ``loss_at(lr)`` is the loss after one step of size ``lr`` (``loss_at(0.0)`` the
    loss before). Evaluate it in float64 (``compat.enable_x64``). The ratio tends to 1
    exactly when the step moves every half along ``-g``; updating one half gives
    ``||g_half||^2 / ||g||^2 < 1``, a sign error gives ``< 0``, so a bare "the loss
    went down" check misses what this one catches. Passes as soon as a ratio, taken
    over ``lrs`` in order (largest first: the cheapest to resolve in floats), is
    within ``rtol`` of 1; fails if none is.

    ``noise``: the loss's rounding noise where the replay ran in ``precision``, less
    than float64 (a layer with ``dtype=jnp.float32``): a ratio may then also be off
    by ``FIRST_ORDER_NOISE_UNITS * noise / (lr ||g||^2)``, and a learning rate
    whose allowance exceeds ``FIRST_ORDER_NOISE_SHARE`` is skipped.

    Raises:
      InvariantNotApplicable: when ``||g||^2`` is too small for the ratio to be
        measured (a flat point), relative to ``loss_scale``, or when rounding noise
        drowns the decrease at every learning rate.
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
        allowance = FIRST_ORDER_NOISE_UNITS * noise / (lr * grad_sq_norm)
        if allowance > FIRST_ORDER_NOISE_SHARE:
            continue  # rounding drowns the decrease at this lr
        ratios.append((lr, (before - float(loss_at(lr))) / (lr * grad_sq_norm)))
        ratio = ratios[-1][1]
        if math.isfinite(ratio) and abs(ratio - 1.0) <= rtol + allowance:
            return
    if not ratios:
        raise InvariantNotApplicable(
            f"judged in {precision.describe()}: its rounding noise of the loss "
            f"({noise:.3g}) drowns the first-order decrease lr * ||g||^2 at every lr"
        )
    shown = ", ".join(f"lr={lr:g}: {r:.4g}" for lr, r in ratios)
    fail(
        "loss_decrease_first_order",
        [
            f"(loss_before - loss_after) / (lr * ||g||^2) should tend to 1; got "
            f"{shown} (loss_before={before:.6g}, ||g||^2={grad_sq_norm:.6g}, "
            f"rtol={rtol:g}; judged in {precision.describe()})"
        ],
        "A ratio near ||g_half||^2/||g||^2 means only one half is updated; a "
        "negative ratio means a sign error (p + lr*g); a ratio that scales with lr "
        "means the step size is not lr.",
    )


KINK_JUMP = 1e-6
"""A gradient that moves by more than this (relative ``||.||^2``) within a step of
``SMALLEST_LR`` means a kink is in reach: the first-order limit is not observable."""


def check_loss_decrease_first_order(s: Subject, e: Example) -> None:
    with compat.enable_x64():
        params, batch = s.example64(e)
        g = s.grad_fn(params, batch)
        sq = float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(g)))

        before = s.loss64_of(e, "before", e.params)

        def loss_at(lr: float) -> float:
            if lr == 0.0:
                return before  # replayed once, read by the scale and the ratios
            new = s.step64(params, batch, jnp.float64(lr))
            # The new trainable halves with the *old* state: the step also advances
            # state (an RNG count, hence another dropout mask) that would change the
            # loss by more than the first-order term being measured.
            moved = s.join(params, {**s.split(params), **s.trainable(new)})
            return float(s.loss64(moved, batch))

        precision = replay_precision(s.loss64, params, batch)
        noise = 0.0
        if not precision.full:
            halves = s.split(params)
            noise = rounding_noise(
                lambda t: s.loss64(s.join(params, {**halves, **t}), batch),
                s.trainable(params),
                precision,
            )
        try:
            assert_loss_decrease_first_order(
                loss_at, sq, loss_scale=abs(before), noise=noise, precision=precision
            )
        except AssertionError:
            # Only a failure pays for this probe: is a kink within reach?
            _raise_if_kink_in_reach(s, params, batch, g, sq)
            raise
        else:  # held: the note counts it
            s.evidence.setdefault(_EVIDENCE, []).append(precision)


def _raise_if_kink_in_reach(
    s: Subject, params: Any, batch: Any, g: Any, sq: float
) -> None:
    """The limit lr -> 0 is only reachable in floats if no kink (a ReLU input near
    0) lies within the smallest step. Probe along *our* SGD direction, so the verdict
    depends on the loss landscape only, never on the step under test."""
    halves = s.split(params)
    probe = s.join(
        params,
        {
            h: jax.tree.map(lambda p, d: p - SMALLEST_LR * d, t, g[h]) if h in g else t
            for h, t in halves.items()
        },
    )
    jump = float(
        sum(
            jnp.sum(jnp.square(a - b))
            for a, b in zip(
                jax.tree.leaves(s.grad_fn(probe, batch)),
                jax.tree.leaves(g),
                strict=True,
            )
        )
    )
    if jump > KINK_JUMP * sq:
        raise InvariantNotApplicable(
            f"the gradient jumps within a step of {SMALLEST_LR:g} (a kink is in "
            "reach): the first-order limit cannot be observed at this example"
        )


_EVIDENCE = "loss_decrease_first_order:precision"


def conclude_loss_decrease_first_order(s: Subject) -> str | None:
    return precision_note(s.evidence.get(_EVIDENCE, []))


# This family's rows of the registry (report order).
register(
    Invariant(
        "loss_decrease_first_order",
        "`(L0 - L(lr)) / (lr·‖g‖²) → 1` as lr → 0, in float64: one half updated "
        "(ratio `‖g_half‖²/‖g‖²`), wrong step size, sign errors",
        check_loss_decrease_first_order,
        conclude=conclude_loss_decrease_first_order,
        needs_sgd=True,
        cost=("float64",),
    ),
)
