"""Invariants about gradients: their structure, their reach, their correctness."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck._typing import PyTree
from hybridcheck.invariants._tree import fail, leaves, paired_halves, split_halves

__all__ = [
    "FD_STEPS",
    "FD_TOL",
    "assert_grads_match_params",
    "assert_every_half_gets_gradient",
    "assert_grads_match_finite_differences",
]

FD_STEPS: tuple[float, ...] = (1e-4, 1e-5, 1e-6, 1e-3)
"""Finite-difference steps tried in turn: where truncation and rounding error balance
depends on the curvature, so one fixed step fails smooth-but-curved models."""
FD_TOL = 1e-3
"""Relative and absolute tolerance of the float64 finite-difference comparison."""
FD_NUDGE = 1e-3
"""Relative size of the offset that moves a failing half off a kink."""


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


def assert_grads_match_finite_differences(
    loss_of_half: Mapping[str, Callable[[PyTree], Any]],
    params: Any,
    *,
    eps: Sequence[float] = FD_STEPS,
    tol: float = FD_TOL,
) -> None:
    """Autodiff gradients equal central finite differences, half by half.

    Uses ``jax.test_util.check_grads`` (reverse mode, order 1). Call it under
    ``compat.enable_x64()`` with float64 params: float32 finite differences are too
    coarse to mean anything. Central differences converge as eps -> 0 until rounding
    takes over, and where that window lies depends on the curvature (BatchNorm of a
    near-constant column is very curved), so each eps in ``eps`` is tried until one
    agrees. At a kink (a ReLU input at exactly 0) finite differences disagree with any
    subgradient, so a failing half is re-checked at a nearby point (params plus a
    ``FD_NUDGE``-relative random offset). Only a disagreement at every eps at both
    points is a failure: a wrong gradient (a factor, a sign, a dropped term) is wrong
    at all.

    Args:
      loss_of_half: ``{label: f}`` where ``f(half_params)`` is the loss with the
        other halves held fixed.
      params: the model's params by half.
    """
    from jax.test_util import check_grads

    halves = split_halves(params)
    if set(loss_of_half) != set(halves):
        raise ValueError(
            f"loss_of_half must have one function per half {list(halves)}, got "
            f"{list(loss_of_half)}"
        )
    problems = []
    for label, half in halves.items():
        f = loss_of_half[label]
        errors: list[str] = []
        for point in (half, _nudge(half)):
            for step in eps:
                try:
                    check_grads(
                        f,
                        (point,),
                        order=1,
                        modes=("rev",),
                        eps=step,
                        atol=tol,
                        rtol=tol,
                    )
                    errors = []
                    break
                except AssertionError as exc:
                    errors.append(str(exc).strip().splitlines()[0][:300])
            if not errors:
                break
        if errors:
            problems.append(
                f"half '{label}': autodiff disagrees with finite differences "
                f"(eps in {list(eps)}, tol={tol:g}) at the example and at a nearby "
                f"point: {errors[0]}"
            )
    fail(
        "grads_match_finite_differences",
        problems,
        "The gradient of that half is wrong: a custom_vjp/custom_jvp with a bug, a "
        "stop_gradient on part of the path, or a forward that is not the function "
        "being differentiated.",
    )


def _nudge(tree: PyTree) -> PyTree:
    flat, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(1234), max(len(flat), 1))
    return jax.tree.unflatten(
        treedef,
        [
            leaf
            + FD_NUDGE
            * (1.0 + jnp.abs(leaf))
            * jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf))
            for leaf, k in zip(flat, keys, strict=False)
        ],
    )
