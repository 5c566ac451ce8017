"""Gradient structure and reach: the gradient pytree matches the params, every
half gets a gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax.numpy as jnp
import numpy as np

from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import (
    InvariantNotApplicable,
    fail,
    leaves,
    paired_halves,
    split_halves,
)
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "assert_grads_match_params",
    "assert_every_half_gets_gradient",
]


def _structure_problems(params: Any, other: Any, what: str) -> list[str]:
    problems = []
    for label, p, o in paired_halves(params, other, ("params", what)):
        try:
            chex.assert_trees_all_equal_structs(p, o)
        except AssertionError as exc:
            problems.append(
                f"half '{label}': {what} has another tree structure than the "
                f"params: {str(exc).splitlines()[0]}"
            )
            continue
        for (path, pl), (_, ol) in zip(leaves(p), leaves(o), strict=True):
            p_type, o_type = jnp.result_type(pl), jnp.result_type(ol)
            if np.shape(pl) != np.shape(ol) or p_type != o_type:
                problems.append(
                    f"half '{label}' leaf {path}: param {p_type}"
                    f"{list(np.shape(pl))} but {what} {o_type}{list(np.shape(ol))}"
                )
    return problems


def assert_grads_match_params(
    params: Any, grads: Any | None, *, new_params: Any = None
) -> None:
    """Each half's gradient (and new params) has that half's structure and dtypes.

    Args:
      params: the params by half.
      grads: the gradient of the loss, by half (None: check ``new_params`` only).
      new_params: optionally, the params the step returned, by half: they must have
        the same structure, shapes and dtypes as ``params`` too.

    Example:
      >>> g = hybridcheck.seed.grads(params, x, y)
      >>> assert_grads_match_params(params, g)
    """
    problems = (
        [] if grads is None else _structure_problems(params, grads, "the gradient")
    )
    if new_params is not None:
        problems += _structure_problems(params, new_params, "the step's new params")
    fail(
        "grads_match_params",
        problems,
        "A gradient must mirror its parameters leaf for leaf: differentiate w.r.t. "
        "each half's params pytree (argnums=(0, 1)), not w.r.t. a Module or a "
        "reshaped/concatenated copy. New params must keep the params' structure "
        "and dtypes (a step that returns a half twice, drops a leaf or promotes "
        "float32 to float64 breaks the next step).",
    )


def assert_every_half_gets_gradient(
    grads_per_example: Sequence[Any],
    *,
    frozen: Callable[[str, str], bool] | None = None,
) -> None:
    """Across examples, every half, and every leaf, gets a nonzero gradient somewhere.

    One example with an all-zero gradient is legitimate (every ReLU unit dead for that
    batch); a half or leaf that is zero on *every* example is not trained at all.

    Args:
      grads_per_example: gradients of several examples (each by half). A leaf may
        also be a boolean "was nonzero" summary of the gradient.
      frozen: ``frozen(half, leaf_path) -> bool`` marks leaves exempt by design.
    """
    if not grads_per_example:
        raise ValueError("grads_per_example must hold at least one example's gradients")
    seen: dict[str, dict[str, bool]] = {}
    for grads in grads_per_example:
        for label, half in split_halves(grads, name="grads").items():
            half_seen = seen.setdefault(label, {})
            for path, leaf in leaves(half):
                nonzero = bool(np.any(np.asarray(leaf) != 0))
                half_seen[path] = half_seen.get(path, False) or nonzero
    n = len(grads_per_example)
    problems = []
    for label, half_seen in seen.items():
        live = {p: v for p, v in half_seen.items() if not (frozen and frozen(label, p))}
        dead = [p for p, v in live.items() if not v]
        if live and len(dead) == len(live):
            problems.append(
                f"half '{label}': gradient is identically zero on all {n} examples "
                f"(leaves {', '.join(dead)})"
            )
        elif dead:
            problems.append(
                f"half '{label}': leaves {', '.join(dead)} have an identically zero "
                f"gradient on all {n} examples"
            )
    fail(
        "every_half_gets_gradient",
        problems,
        "That half is not connected to the loss: it is captured in a closure instead "
        "of being an argument of the differentiated function, behind "
        "jax.lax.stop_gradient, or missing from argnums (the default argnums=0 "
        "differentiates only the first half). Mark leaves frozen on purpose via "
        "`frozen`.",
    )


def check_grads_match_params(s: Subject, e: Example) -> None:
    assert_grads_match_params(s.trainable(e.params), s.grads(e))
    assert_grads_match_params(
        s.split(e.params),
        None,
        new_params=s.split(s.jitted_result(e), name="new params"),
    )


def _some_leaf_never_graded(s: Subject) -> bool:
    """Whether a leaf not frozen on purpose has had a zero gradient everywhere so
    far (``s.grads_seen`` holds one "nonzero" bool per leaf and gradient; read
    incrementally, the running verdict kept in ``s.evidence``)."""
    memo = s.evidence.setdefault("every_half_gets_gradient:alive", [{}, 0])
    alive, done = memo
    for seen in s.grads_seen[done:]:
        for label, half in split_halves(seen, name="grads", min_halves=1).items():
            for path, nonzero in leaves(half):
                key = (label, path)
                alive[key] = alive.get(key, False) or bool(nonzero)
    memo[1] = len(s.grads_seen)
    return any(not v and not (s.frozen and s.frozen(*key)) for key, v in alive.items())


def gather_grads(s: Subject, e: Example) -> None:
    # Along a short trajectory, not only at initialisation: LoRA's lora_a has a zero
    # gradient at the first step (lora_b = 0) and a nonzero one from the second.
    # Each gradient is recorded in s.grads_seen where computed. While some leaf has
    # had none, the trajectory's last point too: after a first step at lr 0 (a
    # warmup from 0) only the second step moves a zero-initialised scale or opens
    # a step-counted gate (a linear probe's stop_gradient), and only the point
    # after it shows the gradient that reaches past them.
    points, _ = s.trajectory(e)
    if _some_leaf_never_graded(s):
        s.grads_at(points[-1], e.batch)


def conclude_every_half_gets_gradient(s: Subject) -> None:
    if not s.grads_seen:
        raise InvariantNotApplicable("no gradient was computed")
    assert_every_half_gets_gradient(s.grads_seen, frozen=s.frozen)


# This family's rows of the registry (report order).
register(
    Invariant(
        "grads_match_params",
        "gradient / new params with another structure, shape or dtype than the params",
        check_grads_match_params,
        cost=("step", "grad"),
    ),
    Invariant(
        "every_half_gets_gradient",
        "across all examples and the points of their trajectories, a half or leaf "
        "whose gradient is always zero (a loss that closes over one half); a gate or "
        "a zero-initialised scale that opens after a step or two is no failure",
        gather_grads,
        conclude=conclude_every_half_gets_gradient,
        cost=("trajectory", "grad"),
    ),
)
