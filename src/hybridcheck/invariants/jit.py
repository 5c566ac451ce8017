"""The jitted step equals the step run op by op (Python state baked in at trace
time)."""

from __future__ import annotations

from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import (
    fail,
)
from hybridcheck.invariants._conditioning import raise_if_ill_conditioned
from hybridcheck.invariants._order import (
    JIT_EAGER_TOL,
    step_order_problems,
)
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "assert_jit_matches_eager",
]


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


def check_jit_matches_eager(s: Subject, e: Example) -> None:
    eager, jitted = s.eager_result(e), s.jitted_result(e)
    before, after_eager, after_jit = (
        s.loss64_of(e, key, p)
        for key, p in (("before", e.params), ("eager", eager), ("jitted", jitted))
    )
    try:
        assert_jit_matches_eager(
            eager, jitted, old=e.params, losses=(before, after_eager, after_jit)
        )
    except AssertionError:
        raise_if_ill_conditioned(s, e, with_loss=True, probe_step=True)
        raise


# This family's rows of the registry (report order).
register(
    Invariant(
        "jit_matches_eager",
        "Python-side state baked in at trace time (n/a on ill-conditioned examples, "
        "see below)",
        check_jit_matches_eager,
        cost=("eager", "float64"),
    ),
)
