"""Which leaves a step moved, which it had to move, and what the optimizer itself does.

A leaf with a gradient must move when the step's update of it is above float
resolution. Without more knowledge that update is ``lr * g`` (the first step of SGD,
momentum or Adam moves at least that far); where the case names its optimizer
(``tx``), it is the optimizer's own update at that step, from the gradient at that
point and the optimizer state threaded from ``tx.init``: the learning rate the step
really used (a warmup's 0, a schedule's later values) and any accumulation over
steps (``optax.MultiSteps``) are read from the optimizer, not assumed.

A leaf left in place at one step but moved at another step of the example's short
trajectory (``Subject.trajectory``) was not dropped: a warmup, a gate opening after a
step counter, a zero-initialised scale that lets gradients through from step two.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import leaf_triples
from hybridcheck.invariants._reduce import update_summary

__all__ = [
    "StepLeaves",
    "step_leaves",
    "summarise",
    "tx_updates",
]


def summarise(
    old: Any, new: Any, grads: Any, group: str, **kwargs: float
) -> tuple[list[tuple[str, str, Any, Any, Any]], dict[str, Any]]:
    """The leaves ``(half, path, old, new, grad)`` and their on-device summary
    (the columns of ``group``, see :mod:`hybridcheck.invariants._reduce`)."""
    # Halves in label order: a container's order varies (a dict that went through
    # jit comes back sorted), and one order means one compiled summary.
    triples = sorted(leaf_triples(old, new, grads), key=lambda t: t[0])
    old_, new_, grads_ = ([t[k] for t in triples] for k in (2, 3, 4))
    return triples, update_summary(old_, new_, grads_, group=group, **kwargs)


@dataclasses.dataclass(frozen=True)
class StepLeaves:
    """One step, leaf by leaf.

    Attributes:
      unmoved: ``(half, path, what)`` per leaf with a gradient that the step had to
        move (see the module doc) and left unchanged.
      moved: ``(half, path)`` of every leaf the step changed.
      ungraded: ``(half, path, max |update|)`` per leaf changed without gradient.
    """

    unmoved: list[tuple[str, str, str]]
    moved: set[tuple[str, str]]
    ungraded: list[tuple[str, str, float]]


def step_leaves(
    old: Any, new: Any, grads: Any, *, lr: float, expected: Any = None
) -> StepLeaves:
    """:class:`StepLeaves` of the step ``old -> new`` with gradient ``grads``.

    ``expected``: the optimizer's own update of this step (by half, like
    ``grads``); a leaf must move where it moves the leaf by more than float
    resolution. ``None``: where ``lr * |g|`` does.
    """
    triples, summary = summarise(old, new, grads, "moves", lr=lr)
    reach = None
    if expected is not None:
        reach = summarise(old, expected, grads, "reach")[1]
    unmoved, moved, ungraded = [], set(), []
    for i, (label, path, *_) in enumerate(triples):
        if summary["changed"][i]:
            moved.add((label, path))
            if not summary["graded"][i]:
                ungraded.append((label, path, float(summary["max_update"][i])))
            continue
        if not summary["graded"][i]:
            continue
        grad = f"gradient max|g|={float(summary['max_grad'][i]):.3g}"
        if reach is None and summary["visible"][i]:
            unmoved.append(
                (label, path, f"{grad} (lr={lr:g}) but the leaf did not change")
            )
        elif reach is not None and reach["visible"][i]:
            unmoved.append(
                (
                    label,
                    path,
                    f"{grad}; the optimizer's own update at this step moves it by up "
                    f"to {float(reach['max_update'][i]):.3g} (lr={lr:g}), but the leaf "
                    "did not change",
                )
            )
    return StepLeaves(unmoved, moved, ungraded)


def tx_updates(s: Subject, e: Example) -> list[Any] | None:
    """Per step of ``s.trajectory(e)``, the update ``s.tx(e.lr)`` makes of the
    trainable halves from the gradient at that point, its state threaded from
    ``tx.init`` at the example (where every case's optimizer state starts).

    Returns None where the case names no ``tx``, or where ``tx`` cannot run on the
    halves' tree (a transformation written for the model's own tree, e.g. masks
    given as a pytree of labels).
    """
    if s.tx is None:
        return None
    points, grads = s.trajectory(e)
    tx = s.tx(e.lr)
    try:
        state = tx.init(s.trainable(points[0]))
        updates = []
        for p, g in zip(points[:-1], grads, strict=True):
            update, state = tx.update(g, state, s.trainable(p))
            updates.append(update)
    except (TypeError, ValueError):
        return None
    return updates
