"""The same-direction rule counts only where the after model's float64 replay runs
in float64 throughout: a layer that computes in float32 inside it rounds
deterministically, so one sign on every example is no evidence there."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck.cases import migrations
from hybridcheck.describe.subject import Example
from hybridcheck.invariants.migration.equivalence import (
    _after_in_float64,
    check_loss_matches_before,
)

BLOCK = next(m for m in migrations.cases() if m.name == "migrate-block")


def _in_float32(loss: Any) -> Any:
    """The same loss computed in float32 inside (an explicit dtype=)."""

    def f32(tree: Any) -> Any:
        return jax.tree.map(lambda x: x.astype(jnp.float32), tree)

    return lambda p, b: loss(f32(p), f32(b))


def _examples(n: int) -> list[Example]:
    rng = np.random.default_rng(0)
    return [
        Example(
            BLOCK.init(jax.random.PRNGKey(seed)),
            tuple(rng.normal(size=(4, 4)).astype(np.float32) for _ in range(2)),
            0.1,
        )
        for seed in range(n)
    ]


def test_a_float64_after_replay_keeps_its_signs():
    examples = _examples(3)
    ms = BLOCK.subject(examples[0].params)
    assert _after_in_float64(ms, examples[0])


def test_an_after_replay_in_float32_gives_no_sign_evidence():
    after = dataclasses.replace(BLOCK.after, loss=_in_float32(BLOCK.after.loss))
    case = dataclasses.replace(BLOCK, after=after)
    examples = _examples(3)
    ms = case.subject(examples[0].params)
    assert not _after_in_float64(ms, examples[0])
    for e in examples:
        check_loss_matches_before(ms, e)
    devs = [d for ds in ms.evidence["loss_matches_before"] for d in ds]
    assert devs
    assert all(d.units > 0 for d in devs)  # float32 rounding deviates
    assert {d.sign for d in devs} == {0}
