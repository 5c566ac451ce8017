"""Other batches of the example's shape, each changing one part of it.

``step_uses_batch`` runs the step on the example's params with each variant: one per
data leaf of the batch (that leaf changed on every row: ``y`` ignored shows here)
and one per half of its rows (every leaf changed on those rows: a step that uses
only its first, or only its last, micro-batch shows here). A floating leaf is
changed to ``-x + max|x| * s`` for a fixed +-1 pattern ``s``: a change of values,
not of their order (a permuted batch has the same mean gradient), large enough to
flip the sign of many gradient entries, which is what an optimizer that follows
only signs (Adam's first step) sees. An integer leaf (labels, token ids) is rolled
one row, or moved by one where that changes nothing. RNG keys and booleans are left
as they are: the randomness and the masks of both runs agree. Every variant keeps
each leaf's type, dtype and shape, so the step is not traced again.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck.describe.trees import leaves

__all__ = ["BatchVariant", "batch_variants"]


@dataclasses.dataclass(frozen=True)
class BatchVariant:
    """Another batch: ``what`` it changes (for messages) and the batch itself."""

    what: str
    batch: Any


def _is_data(x: Any) -> bool:
    """Array leaves of floating or integer values, not RNG keys or masks."""
    if not isinstance(x, np.ndarray | jax.Array) or np.ndim(x) == 0 or not np.size(x):
        return False
    dtype = x.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    if dtype == np.uint32 and np.shape(x)[-1:] in ((2,), (4,)):
        return False  # a raw PRNG key (threefry, or rbg) or a batch of them
    return bool(
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    )


def _signs(shape: tuple[int, ...], stream: int) -> np.ndarray:
    return np.random.default_rng(stream).choice(np.array([-1.0, 1.0]), size=shape)


def _new_values(x: np.ndarray, stream: int) -> np.ndarray:
    """A value change of ``x`` (not a permutation of it)."""
    if np.issubdtype(x.dtype, np.floating):
        scale = float(np.max(np.abs(x.astype(np.float64)), initial=0.0)) or 1.0
        return -x.astype(np.float64) + scale * _signs(x.shape, stream)
    rolled = np.roll(x, 1, axis=0)
    if not np.array_equal(rolled, x):
        return rolled
    return np.where(x > 0, x - 1, x + 1)


def _changed(x: Any, rows: slice, stream: int) -> Any:
    """``x`` with its rows ``rows`` changed, in ``x``'s own type and dtype."""
    host = np.asarray(x)
    new = _new_values(host[rows], stream)
    out = host.copy()
    out[rows] = np.asarray(new).astype(host.dtype)
    if np.array_equal(out, host):
        return x
    return out if isinstance(x, np.ndarray) else jnp.asarray(out, dtype=x.dtype)


def _with(batch: Any, changed: dict[int, Any]) -> Any:
    flat, treedef = jax.tree.flatten(batch)
    return jax.tree.unflatten(treedef, [changed.get(i, x) for i, x in enumerate(flat)])


def batch_variants(batch: Any) -> list[BatchVariant]:
    """The batches ``step_uses_batch`` compares the example's with (see above)."""
    flat = jax.tree.leaves(batch)
    paths = [path for path, _ in leaves(batch)]
    data = [i for i, x in enumerate(flat) if _is_data(x)]
    variants = []
    for k, i in enumerate(data):
        new = _changed(flat[i], slice(None), stream=k)
        if new is not flat[i]:
            variants.append(
                BatchVariant(f"its leaf {paths[i]}", _with(batch, {i: new}))
            )
    counts = collections.Counter(np.shape(flat[i])[0] for i in data)
    rows = max(counts, key=lambda n: (counts[n], n), default=0)
    if rows >= 2:
        half = rows // 2
        for name, part in (
            (f"rows {half}..{rows - 1}", slice(half, rows)),
            (f"rows 0..{half - 1}", slice(0, half)),
        ):
            changed = {
                i: _changed(flat[i], part, stream=100 + k)
                for k, i in enumerate(data)
                if np.shape(flat[i])[0] == rows
            }
            variants.append(
                BatchVariant(f"{name} of every leaf", _with(batch, changed))
            )
    return variants
