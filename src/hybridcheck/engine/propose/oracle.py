"""The oracle: does a candidate converter make the after model's loss the before
model's, in float64, on a few examples? Deviations are in units of the before
model's own float32 noise (:func:`hybridcheck.invariants.migration.deviation`), and
the verdict across the examples is ``loss_matches_before``'s.

The examples' params are the before model's inits moved off their initial values
(zero biases, unit scales and a layout that only matters for them would otherwise
look interchangeable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings

from hybridcheck import compat
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.subject import to64
from hybridcheck.describe.trees import join_halves, split_halves
from hybridcheck.invariants.migration.deviation import (
    HARD_UNITS,
    Deviation,
    assert_matches_before,
    deviation,
)

__all__ = ["Oracle", "draw_batches"]

EXAMPLES = 4


def draw_batches(case: HybridCase, n: int) -> list[Any]:
    """``n`` of the case's batches, the same every run: the largest of ``4 n``
    drawn (Hypothesis draws all-zero batches first, which tell layouts apart
    poorly)."""
    found: list[Any] = []

    @settings(
        max_examples=4 * n,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case.batch_strategy())
    def collect(batch: Any) -> None:
        found.append(batch)

    collect()

    def size(batch: Any) -> float:
        return float(
            sum(
                np.sum(np.abs(np.asarray(x, np.float64)))
                for x in jax.tree.leaves(batch)
            )
        )

    ranked = sorted(range(len(found)), key=lambda i: -size(found[i]))
    return [found[i] for i in sorted(ranked[:n])]


def _moved(case: HybridCase, params: Any, seed: int) -> Any:
    """The trainable float leaves moved by a random amount of their own size."""
    halves = split_halves(params, labels=case.halves, min_halves=1)
    rng = np.random.default_rng(seed)
    trainable = [h for h in halves if h not in case.non_trainable]

    def move(x: Any) -> Any:
        a = np.asarray(x)
        if not np.issubdtype(a.dtype, np.floating):
            return x
        scale = float(np.std(a)) or 1.0
        return (a + 0.5 * scale * rng.standard_normal(a.shape)).astype(a.dtype)

    for h in trainable:
        halves[h] = jax.tree.map(move, halves[h])
    return join_halves(params, halves)


class Oracle:
    """The before model's losses on a few examples, and a candidate's deviation.

    Args:
      before, after: the two cases (their deterministic forms when stochastic).
      batches: the examples' batches (default: drawn from the before case).
      examples: how many examples.
    """

    def __init__(
        self,
        before: HybridCase,
        after: HybridCase,
        batches: Sequence[Any] | None = None,
        examples: int = EXAMPLES,
    ) -> None:
        self.batches = list(batches) if batches else draw_batches(before, examples)
        self.params = [
            _moved(before, before.init(jax.random.PRNGKey(i)), i)
            for i in range(len(self.batches))
        ]
        b = before.subject(self.params[0], min_halves=1)
        self.after = after.subject(after.init(jax.random.PRNGKey(0)), min_halves=1)
        self.before32 = [
            b.loss_fn(p, x) for p, x in zip(self.params, self.batches, strict=True)
        ]
        with compat.enable_x64():
            self.before64 = [
                b.loss64(to64(p), to64(x))
                for p, x in zip(self.params, self.batches, strict=True)
            ]
        self.evaluations = 0

    def deviations(
        self, convert: Callable[[Any], Any], start: int = 0, stop: int | None = None
    ) -> list[Deviation]:
        """The loss deviation on examples ``start:stop``."""
        out = []
        for i in range(start, len(self.params) if stop is None else stop):
            with compat.enable_x64():
                after64 = self.after.loss64(
                    to64(convert(to64(self.params[i]))), to64(self.batches[i])
                )
            self.evaluations += 1
            out.append(deviation("loss", self.before64[i], after64, self.before32[i]))
        return out

    def judge(self, convert: Callable[[Any], Any]) -> tuple[bool, float]:
        """(whether the losses agree, the worst deviation in noise units): the
        first example screens, the others confirm."""
        try:
            first = self.deviations(convert, 0, 1)
        except Exception:  # noqa: BLE001 - a layout the after model cannot run
            return False, float("inf")
        if not first[0].units <= HARD_UNITS:
            return False, first[0].units
        devs = first + self.deviations(convert, 1)
        worst = max(d.units for d in devs)
        try:
            assert_matches_before("loss_matches_before", [[d] for d in devs], hint="")
        except AssertionError:
            return False, worst
        return True, worst
