"""A step must use its batch: the same params on another batch must move the params
differently where the loss's gradient differs (a metamorphic invariant)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import (
    InvariantNotApplicable,
    fail,
    index_str,
    leaf_triples,
)
from hybridcheck.invariants._batch_variants import batch_variants
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "FLIP_SHARE",
    "VISIBLE_ULPS",
    "OtherBatch",
    "assert_step_uses_batch",
]

FLIP_SHARE = 0.1
"""A gradient entry whose sign differs between the two batches counts only if it is
at least this share of the leaf's largest gradient entry on both."""

VISIBLE_ULPS = 4.0
"""... and only where the step moved the entry by at least this many rounding steps
of the new value (an update rounded away cannot differ)."""


@dataclasses.dataclass(frozen=True)
class OtherBatch:
    """The step's result on another batch of the same params.

    Attributes:
      what: what the other batch changes ("its leaf [1]", "rows 4..7 of every leaf").
      new: the step's new params (trainable, by half) on the other batch.
      grads: the loss's gradient (trainable, by half) on the other batch; needed
        only where ``new`` equals the example's new params at a leaf that step
        moved.
    """

    what: str
    new: PyTree
    grads: PyTree = None


@jax.jit
def _equal(a: list[Any], b: list[Any]) -> list[Any]:
    """Leaf by leaf, whether ``a`` and ``b`` are bitwise equal: one compiled call
    per structure (eager ``array_equal`` dispatched several ops per leaf)."""
    return [jnp.array_equal(x, y) for x, y in zip(a, b, strict=True)]


def _same_leaves(new: Any, other: Any) -> list[tuple[str, str]]:
    """The leaves bitwise equal in both (compared on the device: one bool each)."""
    triples = list(leaf_triples(new, new, other))
    same = jax.device_get(_equal([t[3] for t in triples], [t[4] for t in triples]))
    return [
        (label, path) for (label, path, *_), eq in zip(triples, same, strict=True) if eq
    ]


@jax.jit
def _first_flip(o: Any, n: Any, a: Any, b: Any) -> tuple[Any, ...]:
    """On the device: whether some entry flips sign significantly where the step
    moved it, the first such flat index, and the gradients and move there."""
    eps = float(jnp.finfo(n.dtype).eps)
    wide = jnp.promote_types(n.dtype, jnp.float32)
    o, n, a, b = (jnp.ravel(x).astype(wide) for x in (o, n, a, b))
    scale = jnp.maximum(jnp.max(jnp.abs(a)), jnp.max(jnp.abs(b)))
    moved = jnp.abs(n - o) >= VISIBLE_ULPS * eps * jnp.maximum(jnp.abs(n), 1e-30)
    # Signs, not the product: a product of two small entries may underflow to 0.
    flips = (jnp.sign(a) * jnp.sign(b) < 0) & (
        jnp.minimum(jnp.abs(a), jnp.abs(b)) >= FLIP_SHARE * scale
    )
    hit = flips & moved & jnp.isfinite(a) & jnp.isfinite(b)
    i = jnp.argmax(hit)  # the first True (C order), 0 when there is none
    return hit[i], i, a[i], b[i], n[i] - o[i]


def _flip(old: Any, new: Any, g: Any, g2: Any) -> str | None:
    """Where the gradient changes sign significantly at an entry the step moved."""
    if not (jnp.issubdtype(jnp.result_type(new), jnp.floating) and np.size(new)):
        return None
    hit, i, a, b, move = jax.device_get(_first_flip(old, new, g, g2))
    if not hit:
        return None
    where = index_str(tuple(int(k) for k in np.unravel_index(int(i), np.shape(new))))
    return (
        f"entry {where or '[]'}: {float(a):.4g} -> {float(b):.4g}; both steps moved "
        f"it by {float(move):.4g}"
    )


def assert_step_uses_batch(
    old: PyTree, new: PyTree, grads: PyTree, others: Sequence[OtherBatch]
) -> None:
    """The step's update on another batch differs where the loss's gradient does.

    Metamorphic: the same params, two batches. Where a leaf's gradient changes sign
    between the batches (on an entry at least ``FLIP_SHARE`` of the leaf's largest)
    and the step moved that entry visibly, any optimizer that follows its gradient
    (SGD, momentum or Adam from a fresh state, clipping, weight decay) moves the
    leaf differently; a step that returns it bitwise unchanged did not use that
    part of the batch: a stale or fixed batch, ``y`` ignored, one micro-batch only.

    Args:
      old: the params before the step (trainable, by half).
      new: the step's new params on the example's batch (trainable, by half).
      grads: the loss's gradient on the example's batch (trainable, by half).
      others: the step on other batches (see :class:`OtherBatch`).

    Raises:
      InvariantNotApplicable: when no other batch moved any leaf differently and
        none changed a gradient's sign where the step moves (a zero gradient, lr 0):
        nothing says the update should depend on the batch here.
    """
    problems, used = [], False
    total = sum(1 for _ in leaf_triples(new, new, new))
    unmoved = set(_same_leaves(old, new))  # no flip can count where nothing moved
    for other in others:
        same = _same_leaves(new, other.new)
        used = used or len(same) < total
        # Only the leaves that did not move differently, and that the step moved.
        suspects = set(same) - unmoved
        if not suspects:
            continue
        if other.grads is None:
            raise ValueError(
                f"OtherBatch({other.what!r}) left leaves {sorted(suspects)[:3]} where "
                "the example's step put them: its grads (the loss's gradient on that "
                "batch) are needed to judge them"
            )
        where = {
            (label, path): _flip(o, n, g, g2)
            for (label, path, o, n, g), (_, _, _, _, g2) in zip(
                leaf_triples(old, new, grads),
                leaf_triples(old, new, other.grads),
                strict=True,
            )
            if (label, path) in suspects
        }
        problems += [
            f"half '{label}' leaf {path}: the step's update is the same with "
            f"{other.what} changed, though the loss's gradient there changes sign "
            f"({where[label, path]})"
            for label, path in same
            if where.get((label, path))
        ]
    fail(
        "step_uses_batch",
        problems,
        "The step does not use (that part of) its batch: a batch closed over or "
        "fixed at trace time, a stale batch from an earlier step, the targets "
        "ignored, or gradient accumulation over only some of the micro-batches.",
    )
    if not used:
        raise InvariantNotApplicable(
            "the step's update did not depend on the batch here and need not: no "
            "other batch changed the sign of a gradient entry that the step moves "
            "(a zero gradient, lr 0)"
        )


def check_step_uses_batch(s: Subject, e: Example) -> None:
    old, new = s.trainable(e.params), s.trainable(s.jitted_result(e))
    unmoved = set(_same_leaves(old, new))  # as the assertion reads them
    others = []
    for variant in batch_variants(e.batch):
        other = s.trainable(s.jitted(e.params, variant.batch, e.lr))
        grads = None
        # Only a suspicion pays for a gradient: a leaf the other batch left where
        # this one put it, and which the step moved (else no sign flip can count).
        if set(_same_leaves(new, other)) - unmoved:
            grads = s.grad_fn(e.params, variant.batch)
        others.append(OtherBatch(variant.what, other, grads))
    if not others:
        raise InvariantNotApplicable("the batch holds no array that can be changed")
    assert_step_uses_batch(old, new, s.grads(e), others)


# This family's rows of the registry (report order).
register(
    Invariant(
        "step_uses_batch",
        "the same params on other batches (each batch leaf changed; either half of "
        "the rows changed) leave a leaf bitwise unchanged where its gradient changes "
        "sign: a stale or fixed batch, `y` ignored, one micro-batch used, whatever "
        "the optimizer",
        check_step_uses_batch,
        cost=("batches",),
    ),
)
