"""A migration between two real models: a pure Linen original (``from_linen``, one
trainable half) and its pure NNX rewrite (``from_nnx``), each with the user's own
train step. The comparisons hold on the exact rewrite and fail on a semantic bug."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import linen as nn
from hypothesis import strategies as st

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.describe import strategies as hst
from hybridcheck.report.results import FAILED, HELD

# Real-model cases (from_linen / from_nnx) run on the Flax releases of the bridge era,
# as tests/flaxmodels/test_functionalize.py does (0.8.5 has no nnx.Optimizer module).
pytestmark = pytest.mark.skipif(not compat.HAS_BRIDGE, reason="needs Flax 0.9+")

COMPARISONS = [
    "loss_matches_before",
    "grads_match_before",
    "step_matches_before",
    "trajectory_matches_before",
]
LAYERS = ("hidden", "out")


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        return nn.Dense(2, name="out")(jax.nn.gelu(nn.Dense(8, name="hidden")(x)))


def _nnx_mlp(activation: Any) -> Any:
    nnx = compat.nnx

    class NNXMLP(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.hidden = nnx.Linear(3, 8, rngs=rngs)
            self.out = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            return self.out(activation(self.hidden(x)))

    return NNXMLP


BATCHES = st.tuples(
    hst.bounded_arrays((4, 3), max_magnitude=2.0),
    hst.bounded_arrays((4, 2), max_magnitude=2.0),
)


def linen_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    x, y = batch
    return jnp.mean((LinenMLP().apply(variables, x) - y) ** 2)


def linen_step(state: Any, batch: Any) -> Any:
    grads = jax.grad(lambda p: linen_loss({"params": p}, batch, None))(state.params)
    return state.apply_gradients(grads=grads)


def nnx_loss(model: Any, batch: Any) -> Any:
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


def nnx_step(model: Any, optimizer: Any, batch: Any) -> None:
    grads = compat.nnx.grad(nnx_loss)(model, batch)
    compat.optimizer_update(optimizer, model, grads)


def to_nnx(p: Any) -> Any:
    linen = p["linen"]["params"]
    return {
        "nnx": {
            k: {"kernel": linen[k]["kernel"], "bias": linen[k]["bias"]} for k in LAYERS
        },
        "opt": {"step": {"value": p["opt"]["step"]}},
    }


def to_linen(p: Any) -> Any:
    return {
        "linen": {"params": {k: dict(p["nnx"][k]) for k in LAYERS}},
        "opt": {"step": p["opt"]["step"]["value"]},
    }


def migration(activation: Any = jax.nn.gelu, convert: Any = to_nnx) -> Any:
    before = hc.from_linen(
        "linen-mlp",
        module=LinenMLP(),
        loss_fn=linen_loss,
        train_step=linen_step,
        tx=optax.sgd,
        init_args=(jnp.zeros((1, 3)),),
        batches=BATCHES,
    )
    after = hc.from_nnx(
        "nnx-mlp",
        model_fn=_nnx_mlp(activation),
        loss_fn=nnx_loss,
        train_step=nnx_step,
        tx=optax.sgd,
        batches=BATCHES,
    )
    return hc.MigrationCase(
        "linen-mlp -> nnx-mlp",
        before=before,
        after=after,
        convert=convert,
        invert=to_linen,
    )


def _results(case: Any) -> dict[str, Any]:
    report = hc.verify(
        case, profile="dev", invariants=[*COMPARISONS, "roundtrip"], shrink_seconds=0
    )
    assert not report.cases[0].error, report.table()
    return {r.invariant: r for r in report.cases[0].results}


def test_a_pure_linen_model_migrates_to_a_pure_nnx_model():
    results = _results(migration())
    assert all(r.status == HELD for r in results.values()), results


def test_a_semantic_bug_between_real_models_fails():
    results = _results(migration(activation=jax.nn.relu))  # GELU became ReLU
    assert results["loss_matches_before"].status == FAILED
    assert results["roundtrip"].status == HELD  # the converter itself is fine


def test_a_converter_that_misses_the_optimizer_state_is_named():
    def params_only(p: Any) -> Any:
        return {"nnx": to_nnx(p)["nnx"], "opt": p["opt"]}  # opt left in Linen's layout

    report = hc.verify(migration(convert=params_only), profile="dev")
    error = report.cases[0].error or ""
    assert "convert returned params laid out unlike the after case" in error
    assert "['opt']['step']['value']" in error
