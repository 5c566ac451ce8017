"""How one matched unit's array becomes the other's: an axis permutation, then a
row-major reshape (``x.transpose(perm).reshape(shape)``). The identity, a plain
reshape (a (D, H, Dh) kernel read as (D, H*Dh)), a transposed kernel and a head
split are all of this form, and each has an exact inverse.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax.numpy as jnp

__all__ = [
    "Perm",
    "candidate_perms",
    "forward",
    "backward",
    "forward_source",
    "backward_source",
    "describe",
]

Perm = tuple[int, ...]

MAX_RANK = 4
"""Beyond this rank only the identity and the full reversal are tried."""


def _inversions(perm: Perm) -> int:
    return sum(
        1 for i, j in itertools.combinations(range(len(perm)), 2) if perm[i] > perm[j]
    )


def candidate_perms(
    before: tuple[int, ...], after: tuple[int, ...], *, limit: int = 6
) -> list[Perm]:
    """The permutations worth trying, most likely first: the identity, then those
    that make the shapes equal (a transpose), then the rest by how few axes they
    move; two that move the same data (they differ on size-1 axes) count once."""
    rank = len(before)
    ident = tuple(range(rank))
    if rank > MAX_RANK:
        pool: list[Perm] = [ident, tuple(reversed(ident))]
    else:
        pool = list(itertools.permutations(ident))

    def prior(perm: Perm) -> tuple[int, int, int]:
        shaped = tuple(before[i] for i in perm)
        return (perm != ident, shaped != tuple(after), _inversions(perm))

    seen, out = set(), []
    for perm in sorted(pool, key=prior):
        effect = tuple(i for i in perm if before[i] != 1)
        if effect not in seen:
            seen.add(effect)
            out.append(perm)
    return out[:limit]


def forward(x: Any, perm: Perm, shape: tuple[int, ...]) -> Any:
    """``x`` (the before unit) as the after unit."""
    if perm != tuple(range(len(perm))):
        x = jnp.transpose(x, perm)
    return x if tuple(x.shape) == tuple(shape) else jnp.reshape(x, shape)


def backward(y: Any, perm: Perm, shape: tuple[int, ...]) -> Any:
    """``y`` (the after unit) back as the before unit of ``shape``."""
    permuted = tuple(shape[i] for i in perm)
    if tuple(y.shape) != permuted:
        y = jnp.reshape(y, permuted)
    if perm != tuple(range(len(perm))):
        inverse = tuple(int(i) for i in sorted(range(len(perm)), key=perm.__getitem__))
        y = jnp.transpose(y, inverse)
    return y


def forward_source(
    expr: str, perm: Perm, before: tuple[int, ...], after: tuple[int, ...]
) -> str:
    """:func:`forward` as Python source."""
    if perm != tuple(range(len(perm))):
        expr = f"jnp.transpose({expr}, {perm})"
        before = tuple(before[i] for i in perm)
    return expr if tuple(before) == tuple(after) else f"jnp.reshape({expr}, {after})"


def backward_source(
    expr: str, perm: Perm, before: tuple[int, ...], after: tuple[int, ...]
) -> str:
    """:func:`backward` as Python source."""
    permuted = tuple(before[i] for i in perm)
    if permuted != tuple(after):
        expr = f"jnp.reshape({expr}, {permuted})"
    if perm != tuple(range(len(perm))):
        inverse = tuple(int(i) for i in sorted(range(len(perm)), key=perm.__getitem__))
        expr = f"jnp.transpose({expr}, {inverse})"
    return expr


def describe(perm: Perm, before: tuple[int, ...], after: tuple[int, ...]) -> str:
    """``"identity"``, ``"reshape (4, 2, 2) -> (4, 4)"``, ``"transpose (1, 0)"``, ..."""
    moved = perm != tuple(range(len(perm)))
    permuted = tuple(before[i] for i in perm)
    parts = [f"transpose {perm}"] if moved else []
    if permuted != tuple(after):
        parts.append(f"reshape {permuted} -> {tuple(after)}")
    return " then ".join(parts) or "identity"
