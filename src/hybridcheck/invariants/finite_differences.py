"""Reverse-mode gradients against central finite differences, in float64."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat
from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.subject import Example, Subject, to64
from hybridcheck.describe.trees import (
    fail,
    join_halves,
    split_halves,
)
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "FD_STEPS",
    "FD_TOL",
    "FD_NUDGE",
    "FD_SEED",
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


def check_grads_match_finite_differences(s: Subject, e: Example) -> None:
    with compat.enable_x64():
        # s.loss is one object for the case's life: the compiled probes are shared
        # by every example of a shape bucket.
        assert_grads_match_finite_differences(
            s.loss,
            to64(e.params),
            (to64(e.batch),),
            halves=list(s.trainable(e.params)),
        )


# This family's rows of the registry (report order).
register(
    Invariant(
        "grads_match_finite_differences",
        "wrong custom VJPs, partial stop_gradient (float64 reverse-mode directional "
        "derivatives along fixed ±1 directions vs central differences, per half)",
        check_grads_match_finite_differences,
        cost=("float64",),
    ),
)
