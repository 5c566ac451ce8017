"""The compiled probes of finite differences: fixed +-1 directions, the reverse-mode
directional derivatives of every half in one pass, central differences along them,
the loss of one half (for its rounding noise) and the nearby point of the re-check.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.trees import join_halves, split_halves

__all__ = [
    "FD_NUDGE",
    "FD_SEED",
    "autodiff_slopes",
    "central_slopes",
    "loss_of_half",
    "nearby",
    "slope_along",
]

FD_NUDGE = 1e-3
"""Relative size of the offset that moves a failing half (and the batch) off a
kink."""


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
def autodiff_slopes(
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
def central_slopes(
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


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def slope_along(
    loss: Callable[..., Any],
    labels: tuple[str, ...],
    label: str,
    params: Any,
    args: Any,
    t: Any,
) -> Any:
    """The autodiff slope of half ``label`` along its direction, at the half moved
    by ``t`` along it: the derivative that central differences over ``[-t, t]``
    average (their step's ends, for the mean value check)."""
    i = labels.index(label)
    half = split_halves(params, min_halves=1)[label]
    moved = jax.tree.map(lambda p, d: p + t * d, half, _direction(half, i))
    return autodiff_slopes(loss, labels, _with_half(params, label, moved), args)[i]


@functools.partial(jax.jit, static_argnums=(0, 1))
def loss_of_half(
    loss: Callable[..., Any], label: str, params: Any, half: PyTree, args: Any
) -> Any:
    """The loss with ``half`` in place of the half ``label`` of ``params``."""
    return loss(_with_half(params, label, half), *args)


def _offset(leaf: Any, key: Any, scale: Any) -> Any:
    return leaf + FD_NUDGE * scale * jax.random.normal(
        key, jnp.shape(leaf), jnp.result_type(leaf)
    )


def nearby(
    params: Any, labels: Sequence[str], args: tuple[Any, ...]
) -> tuple[Any, tuple[Any, ...]]:
    """``(params, args)`` moved off a kink: the floating leaves of the halves
    ``labels`` by a random offset of ``FD_NUDGE`` relative to each entry, and the
    floating leaves of ``args`` (the batch) by ``FD_NUDGE`` of their largest entry
    (an all-zero image batch puts every ReLU after a BatchNorm at its kink whatever
    the params; its BatchNorm variance is zero)."""
    halves = split_halves(params, min_halves=1)
    moved = {}
    for label in labels:
        flat, treedef = jax.tree.flatten(halves[label])
        keys = jax.random.split(jax.random.PRNGKey(FD_SEED + 1), max(len(flat), 1))
        moved[label] = jax.tree.unflatten(
            treedef,
            [
                _offset(leaf, k, 1.0 + jnp.abs(leaf)) if _is_float(leaf) else leaf
                for leaf, k in zip(flat, keys, strict=False)
            ],
        )
    flat, treedef = jax.tree.flatten(args)
    keys = jax.random.split(jax.random.PRNGKey(FD_SEED + 2), max(len(flat), 1))
    batch = jax.tree.unflatten(
        treedef,
        [
            _offset(leaf, k, float(np.max(np.abs(leaf), initial=0.0)) or 1.0)
            if _is_float(leaf) and np.size(leaf)
            else leaf
            for leaf, k in zip(flat, keys, strict=False)
        ],
    )
    return join_halves(params, {**halves, **moved}), tuple(batch)
