"""A stochastic migration between real models, written as users write them: a Linen
MLP with ``nn.Dropout`` (the key in the batch, ``from_linen``) and its NNX rewrite
with ``nnx.Dropout`` holding its own RNG stream (``from_nnx``, reseeded
automatically). The two draw different masks from any key: the exact rewrite holds
every comparison, a changed rate fails only the comparison in distribution."""

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

pytestmark = pytest.mark.skipif(not compat.HAS_BRIDGE, reason="needs Flax 0.9+")

DISTRIBUTION = "loss_distribution_matches_before"
BATCHES = st.tuples(
    hst.bounded_arrays((8, 3), max_magnitude=2.0),
    hst.bounded_arrays((8, 2), max_magnitude=2.0),
    st.integers(0, 2**31 - 1),
).map(lambda t: {"x": t[0], "y": t[1], "rng": jax.random.PRNGKey(t[2])})


class LinenDrop(nn.Module):
    train: bool = True

    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = jax.nn.gelu(nn.Dense(8, name="hidden")(x))
        h = nn.Dropout(0.5, deterministic=not self.train)(h)
        return nn.Dense(2, name="out")(h)


def linen_loss(train: bool) -> Any:
    def loss(variables: Any, batch: Any, rngs: Any) -> Any:
        out = LinenDrop(train).apply(variables, batch["x"], rngs=rngs)
        return jnp.mean((out - batch["y"]) ** 2)

    return loss


def linen_step(state: Any, batch: Any) -> Any:
    rngs = {"dropout": batch["rng"]}
    grads = jax.grad(lambda p: linen_loss(True)({"params": p}, batch, rngs))(
        state.params
    )
    return state.apply_gradients(grads=grads)


def nnx_model(rate: float, train: bool) -> Any:
    nnx = compat.nnx

    class NNXDrop(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.hidden = nnx.Linear(3, 8, rngs=rngs)
            self.drop = nnx.Dropout(rate, rngs=rngs)
            self.out = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            return self.out(self.drop(jax.nn.gelu(self.hidden(x))))

    def make(rngs: Any) -> Any:
        model = NNXDrop(rngs)
        if not train:
            model.eval()
        return model

    return make


def nnx_loss(model: Any, batch: Any) -> Any:
    return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)


def nnx_step(model: Any, optimizer: Any, batch: Any) -> None:
    grads = compat.nnx.grad(nnx_loss)(model, batch)
    compat.optimizer_update(optimizer, model, grads)


def linen_side(train: bool) -> Any:
    return hc.from_linen(
        "linen-dropout" if train else "linen-dropout-eval",
        module=LinenDrop(train),
        loss_fn=linen_loss(train),
        train_step=linen_step,
        tx=optax.sgd,
        init_args=(jnp.zeros((1, 3)),),
        batches=BATCHES,
        rngs=lambda batch: {"dropout": batch["rng"]},
        reseed=(lambda p, b, key: (p, {**b, "rng": key})) if train else None,
    )


def nnx_side(train: bool, rate: float) -> Any:
    return hc.from_nnx(
        "nnx-dropout" if train else "nnx-dropout-eval",
        model_fn=nnx_model(rate, train),
        loss_fn=nnx_loss,
        train_step=nnx_step,
        tx=optax.sgd,
        batches=BATCHES,
    )


def migration(rate: float = 0.5) -> Any:
    after = nnx_side(True, rate)
    rng = after.init(jax.random.PRNGKey(0))["rng"]  # Linen keeps no RNG state

    def convert(p: Any) -> Any:
        linen = p["linen"]["params"]
        return {
            "nnx": {k: dict(linen[k]) for k in ("hidden", "out")},
            "opt": {"step": {"value": p["opt"]["step"]}},
            "rng": rng,
        }

    return hc.MigrationCase(
        f"linen dropout -> nnx dropout {rate}",
        before=linen_side(True),
        after=after,
        convert=convert,
        before_eval=linen_side(False),
        after_eval=nnx_side(False, rate),
    )


def _results(case: Any, invariants: list[str]) -> dict[str, Any]:
    report = hc.verify(case, profile="dev", invariants=invariants, shrink_seconds=0)
    assert not report.cases[0].error, report.table()
    return {r.invariant: r for r in report.cases[0].results}


def test_an_exact_stochastic_rewrite_holds():
    results = _results(migration(), ["step_matches_before", DISTRIBUTION])
    assert all(r.status == HELD for r in results.values()), results
    assert "agree in distribution" in results[DISTRIBUTION].message


def test_a_changed_dropout_rate_fails_only_in_distribution():
    results = _results(migration(rate=0.1), ["loss_matches_before", DISTRIBUTION])
    assert results["loss_matches_before"].status == HELD  # dropout off: exact
    assert results[DISTRIBUTION].status == FAILED
    assert "Kolmogorov-Smirnov distance" in results[DISTRIBUTION].message


def test_a_dropout_left_out_fails_though_its_side_has_no_reseed():
    case = migration(rate=0.0)  # from_nnx sees no stochastic layer: no reseed
    assert case.after.reseed is None
    results = _results(case, [DISTRIBUTION])
    # its training loss is its eval loss: one value for every key, against the
    # original's spread
    assert results[DISTRIBUTION].status == FAILED, results[DISTRIBUTION].message
    assert "Kolmogorov-Smirnov distance" in results[DISTRIBUTION].message
