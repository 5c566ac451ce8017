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
from hybridcheck.invariants.registry import Invariant, register
from hybridcheck.invariants.updates import (
    assert_update_changes_exactly_graded_leaves,
)

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
) -> None:
    """Along a few consecutive steps, every trainable leaf with a gradient moves.

    Args:
      trajectory: the trainable params ``p0, p1, ..., pK`` of K consecutive steps of
        the step under test, by half.
      grads: the gradients ``g0, ..., g(K-1)`` at ``p0, ..., p(K-1)``, by half.
      lr: the learning rate of the steps.
      frozen: ``frozen(half, leaf_path) -> bool`` for leaves frozen on purpose.

    One step from initialisation is not enough: with LoRA's ``lora_b = 0`` the
    gradient of ``lora_a`` is exactly zero at the first step and nonzero from the
    second, so a step that leaves ``lora_a`` out shows only along the trajectory.
    """
    if len(trajectory) != len(grads) + 1 or not grads:
        raise ValueError(
            f"trajectory must hold one more point than grads (K >= 1 steps), got "
            f"{len(trajectory)} points and {len(grads)} gradients"
        )
    problems = []
    for i, g in enumerate(grads):
        try:
            assert_update_changes_exactly_graded_leaves(
                trajectory[i],
                trajectory[i + 1],
                g,
                lr=lr,
                allow_change_without_grad=True,
            )
        except AssertionError as exc:
            lines = [
                line.strip()[2:]
                for line in str(exc).splitlines()
                if line.strip().startswith("- ")
            ]
            problems += [
                f"step {i + 1}: {line}"
                for line in lines
                if not (frozen and _is_frozen(line, frozen))
            ]
    fail(
        "every_trainable_is_trained",
        problems,
        "A trainable leaf (an nnx.Param or subclass such as nnx.LoRAParam, a Linen "
        "'params' leaf) got a gradient but the step did not update it: it is left "
        "out of the optimizer (nnx.Optimizer(wrt=...) or a filter that misses it) or "
        "out of the differentiated arguments.",
    )


def _is_frozen(line: str, frozen: Callable[[str, str], bool]) -> bool:
    # "half 'nnx' leaf ['a']['b']: ..." -> ("nnx", "['a']['b']")
    try:
        half = line.split("half '", 1)[1].split("'", 1)[0]
        path = line.split(" leaf ", 1)[1].split(":", 1)[0]
    except IndexError:
        return False
    return frozen(half, path)


def assert_update_matches_tx(
    expected: Sequence[Any],
    actual: Sequence[Any],
    old: Sequence[Any],
    *,
    rtol: float = TX_TOL["rtol"],
    atol: float = TX_TOL["atol"],
    update_tol: float = TX_TOL["update_tol"],
) -> None:
    """Each of a few consecutive steps equals the case's optax ``tx`` applied to the
    gradient, with the optimizer state threaded from step to step.

    Args:
      expected: per step, ``p + tx.update(g, state, p)`` (trainable, by half).
      actual: per step, the step under test's result (trainable, by half).
      old: per step, the params the step started from.
    """
    problems = []
    for step, (e, a, o) in enumerate(zip(expected, actual, old, strict=True)):
        for label, path, el, al, ol in leaf_triples(e, a, o):
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
    assert_every_trainable_is_trained(
        [s.trainable(p) for p in points], grads, lr=e.lr, frozen=s.frozen
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
        assert_update_matches_tx(
            expected,
            [s.trainable(p) for p in points[1:]],
            [s.trainable(p) for p in points[:-1]],
        )


# This family's rows of the registry (report order).
register(
    Invariant(
        "every_trainable_is_trained",
        "along a few consecutive steps, a trainable leaf (nnx.Param or subclass such "
        "as LoRAParam, Linen `params`) with a gradient that the step does not update "
        "(left out of the optimizer's `wrt` or of the differentiated arguments)",
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
