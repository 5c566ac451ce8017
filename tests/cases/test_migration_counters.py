"""Leaves with no counterpart in a migration between real models: counters and RNG
state only one side keeps (or advances) are listed as not compared, never failed; a
counter both sides advance is compared exactly and reported in its own values."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import linen as nn

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.invariants.migration import INTEGER_HINT
from hybridcheck.report.results import FAILED, HELD
from tests.cases.test_migration_real import (
    BATCHES,
    LinenMLP,
    linen_loss,
    linen_step,
    nnx_loss,
    nnx_step,
)

pytestmark = pytest.mark.skipif(not compat.HAS_BRIDGE, reason="needs Flax 0.9+")

STEPS = ["step_matches_before", "trajectory_matches_before"]
STEP = "['opt']['step']['value']"


def linen_step_without_counting(state: Any, batch: Any) -> Any:
    """A real pattern: the update applied by hand, ``TrainState.step`` never moved."""
    grads = jax.grad(lambda p: linen_loss({"params": p}, batch, None))(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(params=params, opt_state=opt_state)


def nnx_step_counted_twice(model: Any, optimizer: Any, batch: Any) -> None:
    """The bug: the step counter advanced per (here: two) micro-batch updates."""
    grads = compat.nnx.grad(nnx_loss)(model, batch)
    compat.optimizer_update(optimizer, model, grads)
    compat.optimizer_update(optimizer, model, jax.tree.map(jnp.zeros_like, grads))


class Head(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        return nn.Dense(2, name="out")(x)


def bridged(rngs: Any) -> Any:
    """The MLP with its output layer kept in Linen behind ``bridge.ToNNX``: the
    bridge's RNG stream (``to_nnx__rngs``) counts every call."""
    from flax.nnx import bridge  # 0.9+ (the module is skipped before)

    nnx = compat.nnx

    class Bridged(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.hidden = nnx.Linear(3, 8, rngs=rngs)
            self.out = bridge.ToNNX(Head(), rngs=rngs)
            compat.bridge_lazy_init(self.out, jnp.zeros((1, 8)))

        def __call__(self, x: Any) -> Any:
            return self.out(jax.nn.gelu(self.hidden(x)))

    return Bridged(rngs)


def migration(linen_train_step: Any = linen_step, nnx_train_step: Any = nnx_step):
    before = hc.from_linen(
        "linen-mlp",
        module=LinenMLP(),
        loss_fn=linen_loss,
        train_step=linen_train_step,
        tx=optax.sgd,
        init_args=(jnp.zeros((1, 3)),),
        batches=BATCHES,
    )
    after = hc.from_nnx(
        "bridged-mlp",
        model_fn=bridged,
        loss_fn=nnx_loss,
        train_step=nnx_train_step,
        tx=optax.sgd,
        batches=BATCHES,
    )
    rng = after.init(jax.random.PRNGKey(0))["rng"]  # the before model has none

    def convert(p: Any) -> Any:
        linen = p["linen"]["params"]
        return {
            "nnx": {"hidden": dict(linen["hidden"])},
            "linen:out": {"out": dict(linen["out"])},
            "opt": {"step": {"value": p["opt"]["step"]}},
            "rng": rng,
        }

    return hc.MigrationCase("linen-mlp -> bridged", before, after, convert)


def _results(case: Any) -> dict[str, Any]:
    report = hc.verify(case, profile="dev", invariants=STEPS, shrink_seconds=0)
    assert not report.cases[0].error, report.table()
    return {r.invariant: r for r in report.cases[0].results}


def test_counters_only_one_side_advances_are_listed_not_failed():
    results = _results(migration(linen_train_step=linen_step_without_counting))
    for name in STEPS:
        r = results[name]
        assert r.status == HELD, r.message
        # the original never advances TrainState.step; NNX's optimizer does
        assert f"not compared: update {STEP}: only the migrated step" in r.message
        # the bridge's RNG count advances on every call; Linen keeps no such state
        assert "not compared: update ['rng']" in r.message
        assert "['count']: RNG state" in r.message


def test_a_counter_both_sides_advance_is_compared_exactly():
    results = _results(migration(nnx_train_step=nnx_step_counted_twice))
    message = results["step_matches_before"].message
    assert results["step_matches_before"].status == FAILED
    assert (
        f"update {STEP}: integer leaf, compared exactly: from 0, the original's step "
        "leaves it at 1 (converted), the migrated step at 2"
    ) in message
    assert INTEGER_HINT in message
    # its own values, no float32 noise units or BatchNorm hint for a counter
    assert "float32 noise" not in message
    assert "BatchNorm" not in message
    assert results["trajectory_matches_before"].status == FAILED
    assert "leaves it at 3 (converted), the migrated step at 6" in (
        results["trajectory_matches_before"].message
    )
