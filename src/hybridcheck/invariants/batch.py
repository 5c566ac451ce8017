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
        only where ``new`` equals the example's new params somewhere.
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


def _flip(old: Any, new: Any, g: Any, g2: Any) -> str | None:
    """Where the gradient changes sign significantly at an entry the step moved."""
    o, n, a, b = (np.asarray(x, np.float64) for x in (old, new, g, g2))
    if not (np.issubdtype(np.asarray(new).dtype, np.floating) and a.size):
        return None
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
    eps = float(np.finfo(np.asarray(new).dtype).eps)
    moved = np.abs(n - o) >= VISIBLE_ULPS * eps * np.maximum(np.abs(n), 1e-30)
    flips = (a * b < 0) & (np.minimum(np.abs(a), np.abs(b)) >= FLIP_SHARE * scale)
    hits = np.argwhere(flips & moved & np.isfinite(a) & np.isfinite(b))
    if not len(hits):
        return None
    i = tuple(hits[0])
    return (
        f"entry {index_str(i) or '[]'}: {a[i]:.4g} -> {b[i]:.4g}; both steps moved it "
        f"by {n[i] - o[i]:.4g}"
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
    for other in others:
        same = _same_leaves(new, other.new)
        used = used or len(same) < total
        if not same:
            continue
        if other.grads is None:
            raise ValueError(
                f"OtherBatch({other.what!r}) left leaves {same[:3]} unchanged: its "
                "grads (the loss's gradient on that batch) are needed to judge them"
            )
        suspects = set(same)  # only the leaves that did not move differently
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
    others = []
    for variant in batch_variants(e.batch):
        other = s.trainable(s.jitted(e.params, variant.batch, e.lr))
        grads = None
        if _same_leaves(new, other):  # only a suspicion pays for a gradient
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
