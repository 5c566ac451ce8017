"""The gradient every invariant judges: over the floating leaves of the trainable
halves only, with leaves frozen on purpose counted as zero."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hybridcheck.describe._typing import PyTree

__all__ = ["trainable_grad"]


def _is_float(x: Any) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(x), jnp.inexact))


def trainable_grad(s: Any, params: Any, batch: Any) -> dict[str, PyTree]:
    """``jax.grad(s.loss)`` w.r.t. the floating leaves of ``s``'s trainable halves.

    ``s``: a :class:`~hybridcheck.describe.subject.Subject`. Returns the trainable
    halves only; integer leaves get zero gradients.
    """
    halves = s.split(params)
    train = {k: v for k, v in halves.items() if k not in s.non_trainable}
    flat, treedef = jax.tree.flatten(train)
    floats = [_is_float(x) for x in flat]

    def loss_of(float_leaves: list[Any]) -> Any:
        it = iter(float_leaves)
        merged = [next(it) if f else x for x, f in zip(flat, floats, strict=True)]
        return s.loss(
            s.join(params, {**halves, **jax.tree.unflatten(treedef, merged)}), batch
        )

    g = jax.grad(loss_of)([x for x, f in zip(flat, floats, strict=True) if f])
    it = iter(g)
    pairs = zip(flat, floats, strict=True)
    grads = jax.tree.unflatten(
        treedef, [next(it) if f else jnp.zeros_like(x) for x, f in pairs]
    )
    if s.frozen is None:
        return grads  # type: ignore[no-any-return]
    # Leaves frozen on purpose (LoRA-only fine-tuning) are not trained: their
    # gradient is zero for every invariant, so "unchanged" is what they check.
    return {
        half: jax.tree_util.tree_map_with_path(
            lambda path, x, half=half: (
                jnp.zeros_like(x) if s.frozen(half, jax.tree_util.keystr(path)) else x
            ),
            tree,
        )
        for half, tree in grads.items()
    }
