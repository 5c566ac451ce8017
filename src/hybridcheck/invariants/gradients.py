"""Invariants about gradients: their structure, their reach, their correctness."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck._typing import PyTree
from hybridcheck.invariants._tree import (
    fail,
    join_halves,
    leaves,
    paired_halves,
    split_halves,
)

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
FD_SEED = 1234
"""Key of the fixed random directions and nudges (a derandomized check)."""


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


def _is_float(x: Any) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(x), jnp.floating))


def _signs(shape: tuple[int, ...], dtype: Any, stream: int) -> Any:
    """A fixed pseudo-random +-1 array: murmur3's 32-bit finalizer of each element's
    index (offset by ``stream``), its top bit the sign. A counter-based hash, like
    threefry but a few integer ops per element: it compiles and runs several times
    faster, and a direction need not be cryptographically random."""
    h = jnp.arange(math.prod(shape), dtype=jnp.uint32) + jnp.uint32(
        (FD_SEED + 0x9E3779B9 * stream) % 2**32
    )
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h = (h ^ (h >> shift)) * jnp.uint32(mult)
    h = h ^ (h >> 16)
    return jnp.where(h >> 31 == 1, 1.0, -1.0).astype(dtype).reshape(shape)


def _direction(half: PyTree, index: int) -> PyTree:
    """A fixed +-1 direction over the floating leaves of ``half`` (zero on integer
    leaves), made inside the compiled probe: nothing of the model's size is made on
    the host."""
    flat, treedef = jax.tree.flatten(half)
    return jax.tree.unflatten(
        treedef,
        [
            _signs(jnp.shape(x), jnp.result_type(x), 1000 * index + k)
            if _is_float(x)
            else jnp.zeros_like(x)
            for k, x in enumerate(flat)
        ],
    )


def _with_half(params: Any, label: str, half: PyTree) -> Any:
    return join_halves(params, {**split_halves(params, min_halves=1), label: half})


@functools.partial(jax.jit, static_argnums=(0, 1))
def _autodiff_slopes(
    loss: Callable[..., Any], labels: tuple[str, ...], params: Any, args: Any
) -> Any:
    """``<grad of each half, its direction>``: one reverse pass for all halves."""
    halves = split_halves(params, min_halves=1)

    def of(checked: dict[str, PyTree]) -> Any:
        return loss(join_halves(params, {**halves, **checked}), *args)

    grads = jax.grad(of)({label: halves[label] for label in labels})
    return jnp.stack(
        [
            sum(
                (
                    jnp.vdot(g, v)
                    for g, v in zip(
                        jax.tree.leaves(grads[label]),
                        jax.tree.leaves(_direction(halves[label], i)),
                        strict=True,
                    )
                    if _is_float(g)
                ),
                jnp.zeros(()),
            )
            for i, label in enumerate(labels)
        ]
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _central_slopes(
    loss: Callable[..., Any],
    labels: tuple[str, ...],
    params: Any,
    args: Any,
    eps: Any,
) -> Any:
    """``(loss(p + eps v) - loss(p - eps v)) / (2 eps)`` along each half's direction."""
    halves = split_halves(params, min_halves=1)
    slopes = []
    for i, label in enumerate(labels):
        v = _direction(halves[label], i)
        ends = [
            loss(
                _with_half(
                    params,
                    label,
                    jax.tree.map(
                        lambda p, d, s=sign: p + s * eps * d, halves[label], v
                    ),
                ),
                *args,
            )
            for sign in (1.0, -1.0)
        ]
        slopes.append((ends[0] - ends[1]) / (2 * eps))
    return jnp.stack(slopes)


def assert_grads_match_finite_differences(
    loss: Callable[..., Any],
    params: Any,
    args: tuple[Any, ...] = (),
    *,
    halves: Sequence[str] | None = None,
    eps: Sequence[float] = FD_STEPS,
    tol: float = FD_TOL,
) -> None:
    """Autodiff gradients equal central finite differences, half by half.

    For each half, the reverse-mode directional derivative ``<grad, v>`` along a
    fixed random +-1 direction ``v`` over that half's floating leaves is compared
    with ``(loss(p + eps v) - loss(p - eps v)) / (2 eps)`` to ``tol`` (absolute and
    relative), as ``jax.test_util.check_grads(order=1, modes=("rev",))`` does, but
    with one reverse pass for all halves and two loss evaluations per half, each
    compiled once per shape: the cost is a few train steps whatever the size of the
    model (no per-parameter differences). Call it under ``compat.enable_x64()`` with
    float64 params: float32 finite differences are too coarse to mean anything.

    Central differences converge as eps -> 0 until rounding takes over, and where
    that window lies depends on the curvature (BatchNorm of a near-constant column is
    very curved), so each eps in ``eps`` is tried until one agrees. At a kink (a ReLU
    input at exactly 0) finite differences disagree with any subgradient, so a
    failing half is re-checked at a nearby point (params plus a ``FD_NUDGE``-relative
    random offset). Only a disagreement at every eps at both points is a failure: a
    wrong gradient (a factor, a sign, a dropped term) is wrong at all.

    Args:
      loss: ``loss(params, *args) -> scalar``, params by half. Keep the same
        function object between calls: it is a static argument of the compiled
        probes.
      params: the model's params by half.
      args: further arguments of ``loss`` (a batch), traced.
      halves: labels of the halves to check (default: every half).
    """
    all_halves = split_halves(params, min_halves=1)
    labels = tuple(all_halves) if halves is None else tuple(halves)
    unknown = [label for label in labels if label not in all_halves]
    if unknown or not labels:
        raise ValueError(
            f"halves must name halves of params {list(all_halves)}, got {list(labels)}"
        )
    if not eps or any(not (step > 0) for step in eps):
        raise ValueError(f"eps must be positive steps, got {list(eps)}")
    failing = _disagreements(loss, labels, params, tuple(args), labels, eps, tol)
    if failing:
        nearby = _nudge(params, list(failing))
        again = _disagreements(
            loss, labels, nearby, tuple(args), list(failing), eps, tol
        )
        failing = {label: failing[label] for label in again}
    fail(
        "grads_match_finite_differences",
        [
            f"half '{label}': autodiff disagrees with finite differences (eps in "
            f"{list(eps)}, tol={tol:g}) at the example and at a nearby point: {why}"
            for label, why in failing.items()
        ],
        "The gradient of that half is wrong: a custom_vjp/custom_jvp with a bug, a "
        "stop_gradient on part of the path, or a forward that is not the function "
        "being differentiated.",
    )


def _disagreements(
    loss: Callable[..., Any],
    labels: tuple[str, ...],
    params: Any,
    args: tuple[Any, ...],
    check: Sequence[str],
    eps: Sequence[float],
    tol: float,
) -> dict[str, str]:
    """``{label: why}`` for the halves of ``check`` that disagree at every eps."""
    exact = np.asarray(_autodiff_slopes(loss, labels, params, args))
    pending, why = list(check), dict[str, str]()
    for step in eps:
        central = np.asarray(_central_slopes(loss, labels, params, args, step))
        for label in list(pending):
            i = labels.index(label)
            if abs(exact[i] - central[i]) <= tol + tol * abs(central[i]):
                pending.remove(label)
            else:
                why.setdefault(
                    label,
                    f"directional derivative {exact[i]:.8g} by autodiff vs "
                    f"{central[i]:.8g} by central differences (eps={step:g})",
                )
        if not pending:
            break
    return {label: why[label] for label in pending}


def _nudge(params: Any, labels: Sequence[str]) -> Any:
    """``params`` with the floating leaves of ``labels`` moved by a small random
    offset (``FD_NUDGE`` relative)."""
    halves = split_halves(params, min_halves=1)
    moved = {}
    for label in labels:
        flat, treedef = jax.tree.flatten(halves[label])
        keys = jax.random.split(jax.random.PRNGKey(FD_SEED + 1), max(len(flat), 1))
        moved[label] = jax.tree.unflatten(
            treedef,
            [
                leaf
                + FD_NUDGE
                * (1.0 + jnp.abs(leaf))
                * jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf))
                if _is_float(leaf)
                else leaf
                for leaf, k in zip(flat, keys, strict=False)
            ],
        )
    return join_halves(params, {**halves, **moved})
