"""The jitted step equals the step run op by op (Python state baked in at trace
time)."""

from __future__ import annotations

import numpy as np

from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import (
    fail,
)
from hybridcheck.invariants._conditioning import (
    loss_precision,
    raise_if_ill_conditioned,
)
from hybridcheck.invariants._order import (
    JIT_EAGER_TOL,
    step_order_problems,
)
from hybridcheck.invariants._precision import FLOAT64, Precision, precision_note
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "LOSS_NOISE_UNITS",
    "assert_jit_matches_eager",
]

LOSS_NOISE_UNITS = 8.0
"""Where the float64 replays of the loss run in less than float64 (a layer's compute
dtype), the losses after the two steps may also differ by this many rounding steps
of that precision (relative to ``1 + |loss before|``)."""


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
    precision: Precision = FLOAT64,
) -> None:
    """Eager and jitted results of a step agree.

    Never bitwise: XLA fuses and reorders reductions (about 1 ulp apart on
    JAX >= 0.5). Each leaf must agree to ``rtol``/``atol``; with ``old`` (the params
    before the step) a leaf may also differ by ``update_tol`` times its largest
    update, because normalising optimizers (Adam at step 1: ``g / (|g| + eps)``)
    amplify rounding in gradient entries near ``eps``. With ``losses`` =
    ``(before, after_eager, after_jit)`` the two losses after the step must agree
    to ``loss_rtol`` (1%) of the decrease plus ``loss_atol * (1 + |before|)``: the
    observable that a baked-in Python value changes. ``precision``: what the
    float64 replays of those losses ran in; below float32, ``loss_atol`` is at
    least ``LOSS_NOISE_UNITS`` of its rounding steps.
    """
    if precision.eps > loss_atol / LOSS_NOISE_UNITS:
        loss_atol = LOSS_NOISE_UNITS * precision.eps
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
    if problems and not precision.full:
        problems.append(f"losses replayed in {precision.describe()}")
    fail(
        "jit_matches_eager",
        problems,
        "The step depends on Python-side state (a counter, a global, a cached array, "
        "host randomness) that jit bakes in at trace time, or it branches on values.",
    )


def check_jit_matches_eager(s: Subject, e: Example) -> None:
    eager, jitted = s.eager_result(e), s.jitted_result(e)
    before, after_eager, after_jit = (
        s.loss64_of(e, key, p)
        for key, p in (("before", e.params), ("eager", eager), ("jitted", jitted))
    )
    precision = loss_precision(s, e)
    try:
        assert_jit_matches_eager(
            eager,
            jitted,
            old=e.params,
            losses=(before, after_eager, after_jit),
            precision=precision,
        )
    except AssertionError:
        raise_if_ill_conditioned(s, e, with_loss=True, probe_step=True)
        raise
    else:  # held: the note counts it
        s.evidence.setdefault(_EVIDENCE, []).append(precision)


_EVIDENCE = "jit_matches_eager:precision"


def conclude_jit_matches_eager(s: Subject) -> str | None:
    # The two steps are float32 runs: only a replay below float32 changes the verdict.
    float32 = float(np.finfo(np.float32).eps)
    return precision_note(s.evidence.get(_EVIDENCE, []), floor=float32)


# This family's rows of the registry (report order).
register(
    Invariant(
        "jit_matches_eager",
        "Python-side state baked in at trace time (n/a on ill-conditioned examples, "
        "see below)",
        check_jit_matches_eager,
        conclude=conclude_jit_matches_eager,
        cost=("eager", "float64"),
    ),
)
