"""The training-loop invariants on small functional cases written for the purpose:
each holds for the correct step and fails, by name, for the bug it exists for."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import strategies as st

import hybridcheck as hc
from hybridcheck.cases.mutants import CASE_MUTANTS
from hybridcheck.describe import strategies as hst
from hybridcheck.report.results import FAILED, HELD, NOT_APPLICABLE

IN, OUT, RANK = 3, 2, 2


def lora_init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "base": {"w": jax.random.normal(k1, (IN, OUT))},
        "lora": {
            "a": jax.random.normal(k2, (IN, RANK)),
            "b": jnp.zeros((RANK, OUT)),  # standard LoRA: b starts at zero
        },
        "head": {"w": jax.random.normal(k3, (OUT, 1))},
    }


def lora_loss(params, batch):
    x, y = batch
    w = params["base"]["w"] + params["lora"]["a"] @ params["lora"]["b"]
    return jnp.mean((jnp.tanh(x @ w) @ params["head"]["w"] - y) ** 2)


def sgd_on(labels, leaves=None):
    """SGD on the named halves (and, within 'lora', only ``leaves`` if given)."""

    def step(params, batch, lr):
        g = jax.grad(lora_loss)(params, batch)
        new = dict(params)
        for h in labels:
            new[h] = jax.tree.map(lambda p, d: p - lr * d, params[h], g[h])
        if leaves is not None:
            new["lora"] = {
                k: new["lora"][k] if k in leaves else params["lora"][k]
                for k in params["lora"]
            }
        return new

    return step


@st.composite
def batches(draw):
    x = draw(hst.bounded_arrays((4, IN), max_magnitude=2.0))
    return x, draw(hst.bounded_arrays((4, 1), max_magnitude=2.0))


LORA = hc.HybridCase(
    name="lora",
    init=lora_init,
    loss=lora_loss,
    batches=batches(),
    step=sgd_on(("base", "lora", "head")),
    sgd=True,
)


def verdicts(case, invariants):
    report = hc.verify(case, profile="dev", invariants=invariants, shrink_seconds=0)
    return {r.invariant: r for r in report.cases[0].results}


def test_zero_initialised_lora_is_not_a_false_alarm():
    # lora_a's gradient is exactly zero at init (b = 0) and nonzero from step 2.
    batch = (jnp.ones((4, IN)), jnp.ones((4, 1)))
    g0 = jax.grad(lora_loss)(lora_init(jax.random.PRNGKey(0)), batch)
    assert not np.any(g0["lora"]["a"])
    results = verdicts(LORA, ["every_half_gets_gradient", "every_trainable_is_trained"])
    assert {r.status for r in results.values()} == {HELD}, results


def test_lora_leaf_left_out_of_the_step_is_caught_along_the_trajectory():
    case = dataclasses.replace(
        LORA, name="lora-a-untrained", step=sgd_on(("base", "lora", "head"), ("b",))
    )
    result = verdicts(case, ["every_trainable_is_trained"])[
        "every_trainable_is_trained"
    ]
    assert result.status == FAILED
    assert "step 2: half 'lora' leaf ['a']" in result.message


def test_a_leaf_that_never_gets_gradient_still_fails_gradient_reach():
    def loss_without_head(params, batch):
        frozen = {**params, "head": jax.lax.stop_gradient(params["head"])}
        return lora_loss(frozen, batch)

    case = dataclasses.replace(LORA, name="head-detached", loss=loss_without_head)
    result = verdicts(case, ["every_half_gets_gradient"])["every_half_gets_gradient"]
    assert result.status == FAILED
    assert "half 'head'" in result.message


# --- update_matches_tx: Adam with its state threaded through the params ---------


def adam_init(key):
    params = lora_init(key)
    return {**params, "opt": optax.adam(1e-3).init(params)}


def adam_step_for(make_tx, *, reset=False):
    def step(params, batch, lr):
        train = {k: v for k, v in params.items() if k != "opt"}
        tx = make_tx(lr)
        state = tx.init(train) if reset else params["opt"]
        updates, state = tx.update(jax.grad(lora_loss)(train, batch), state, train)
        return {**optax.apply_updates(train, updates), "opt": state}

    return step


ADAM = hc.HybridCase(
    name="adam-threaded",
    init=adam_init,
    loss=lambda p, b: lora_loss({k: v for k, v in p.items() if k != "opt"}, b),
    batches=batches(),
    step=adam_step_for(optax.adam),
    non_trainable=("opt",),
    tx=optax.adam,
)


@pytest.mark.parametrize(
    ("name", "step", "status"),
    [
        ("threaded", adam_step_for(optax.adam), HELD),
        ("reset-each-step", adam_step_for(optax.adam, reset=True), FAILED),
        ("other-b1", adam_step_for(lambda lr: optax.adam(lr, b1=0.8)), FAILED),
    ],
)
def test_update_matches_tx(name, step, status):
    case = dataclasses.replace(ADAM, name=name, step=step)
    result = verdicts(case, ["update_matches_tx"])["update_matches_tx"]
    assert result.status == status, result.message
    if status == FAILED:
        assert "step 2:" in result.message or "step 1:" in result.message


def test_training_invariants_need_their_case_fields():
    results = verdicts(
        LORA, ["update_matches_tx", "state_is_threaded", "randomness_is_used"]
    )
    for name, result in results.items():
        assert result.status == NOT_APPLICABLE, name
        assert "does not set HybridCase." in result.message


@pytest.mark.parametrize("mutant", CASE_MUTANTS, ids=[m.name for m in CASE_MUTANTS])
def test_case_mutant_is_caught_by_its_invariant(mutant):
    result = verdicts(mutant.make(), [mutant.caught_by])[mutant.caught_by]
    assert result.status == FAILED, result.message
    assert result.message.startswith(f"[hybridcheck] {mutant.caught_by}:")
