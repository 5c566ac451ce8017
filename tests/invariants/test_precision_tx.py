"""update_matches_tx on a model that computes in bfloat16: the step and the optax
reference round differently (micro-batches vs one batch), which is no bug, while an
optimizer state re-initialised each step still fails, in bf16 units."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest
from hypothesis import strategies as st

import hybridcheck as hc
from hybridcheck.describe import strategies as hst
from hybridcheck.report.results import FAILED, HELD

IN, ROWS = 6, 8


def loss(params: Any, batch: Any) -> Any:
    x, y = batch
    w = params["a"]["w"].astype(jnp.bfloat16)  # a bf16 compute dtype
    h = jnp.tanh(x.astype(jnp.bfloat16) @ w).astype(params["b"]["w"].dtype)
    return jnp.mean((h @ params["b"]["w"] - y) ** 2)


def tx(lr: Any) -> Any:
    return optax.sgd(lr, momentum=0.9)


def step_for(*, reset: bool) -> Any:
    def step(params: Any, batch: Any, lr: Any) -> Any:
        train = {k: params[k] for k in ("a", "b")}
        x, y = batch
        half = ROWS // 2  # gradient accumulated over two micro-batches
        grads = jax.tree.map(
            lambda g1, g2: (g1 + g2) / 2,
            jax.grad(loss)(train, (x[:half], y[:half])),
            jax.grad(loss)(train, (x[half:], y[half:])),
        )
        state = tx(lr).init(train) if reset else params["opt"]  # BUG if reset
        updates, state = tx(lr).update(grads, state, train)
        return {**optax.apply_updates(train, updates), "opt": state}

    return step


def init(key: Any) -> Any:
    ka, kb = jax.random.split(key)
    train = {
        "a": {"w": jax.random.normal(ka, (IN, 4))},
        "b": {"w": jax.random.normal(kb, (4, 1))},
    }
    return {**train, "opt": tx(0.1).init(train)}


def case(reset: bool) -> Any:
    return hc.HybridCase(
        name=f"bf16-momentum{'-reset' if reset else ''}",
        init=init,
        loss=lambda p, b: loss({k: p[k] for k in ("a", "b")}, b),
        batches=st.tuples(
            hst.bounded_arrays((ROWS, IN), max_magnitude=2.0),
            hst.bounded_arrays((ROWS, 1), max_magnitude=2.0),
        ),
        step=step_for(reset=reset),
        non_trainable=("opt",),
        tx=tx,
        sgd=False,
    )


@pytest.mark.parametrize(("reset", "status"), [(False, HELD), (True, FAILED)])
def test_update_matches_tx_is_judged_in_the_precision_that_ran(reset, status):
    report = hc.verify(
        case(reset), profile="dev", invariants=["update_matches_tx"], shrink_seconds=0
    )
    result = report.cases[0].results[0]
    assert result.status == status, result.message
    if status == FAILED:
        assert "Judged in bfloat16" in result.message
