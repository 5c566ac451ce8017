"""Gradient and update invariants judged along the example's short trajectory and
against the lr each step really used (issue 20): a warmup from lr 0, a gate that
opens after a step, several training forwards per update. Each still fails the bug
it exists for."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hybridcheck as hc
from hybridcheck.invariants.state import forwards_per_step
from hybridcheck.report.results import FAILED, HELD
from tests.invariants.test_checks_training import batches, lora_init, lora_loss


def warmup(lr):  # a linear warmup from lr 0, as Flax's ImageNet config
    return optax.adam(optax.linear_schedule(0.0, lr, transition_steps=2))


def train(params):
    return {k: v for k, v in params.items() if k != "opt"}


def step_for(flip=()):
    """Adam on the warmup, its state threaded; halves in ``flip`` go uphill."""

    def step(params, batch, lr):
        p = train(params)
        updates, state = warmup(lr).update(
            jax.grad(lora_loss)(p, batch), params["opt"], p
        )
        updates = {
            h: jax.tree.map(lambda u, h=h: -u if h in flip else u, t)
            for h, t in updates.items()
        }
        return {**optax.apply_updates(p, updates), "opt": state}

    return step


WARMUP = hc.HybridCase(
    name="adam-warmup",
    init=lambda key: {**lora_init(key), "opt": warmup(0.1).init(lora_init(key))},
    loss=lambda p, b: lora_loss(train(p), b),
    batches=batches(),
    step=step_for(),
    non_trainable=("opt",),
    tx=warmup,
)
UPDATES = [
    "update_changes_exactly_graded_leaves",
    "every_trainable_is_trained",
    "update_is_descent",
    "every_half_gets_gradient",
    "update_matches_tx",
]


def verdicts(case, invariants):
    report = hc.verify(case, profile="dev", invariants=invariants, shrink_seconds=0)
    return {r.invariant: r for r in report.cases[0].results}


def test_a_first_step_at_lr_zero_is_not_a_dropped_update():
    results = verdicts(WARMUP, UPDATES)
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(UPDATES, HELD)


def test_a_sign_error_behind_a_warmup_is_judged_at_the_first_step_that_moves():
    case = dataclasses.replace(WARMUP, name="warmup-uphill", step=step_for({"head"}))
    result = verdicts(case, ["update_is_descent"])["update_is_descent"]
    assert result.status == FAILED
    assert "half 'head'" in result.message


def test_a_half_never_updated_behind_a_warmup_still_fails():
    def frozen_head(params, batch, lr):
        new = step_for()(params, batch, lr)
        return {**new, "head": params["head"]}

    case = dataclasses.replace(WARMUP, name="warmup-head-dropped", step=frozen_head)
    results = verdicts(case, UPDATES[:2])
    for name in UPDATES[:2]:
        assert results[name].status == FAILED, name
        assert "half 'head'" in results[name].message
    assert "the optimizer's own update" in results[UPDATES[0]].message


def scaled_init(key):
    k1, k2 = jax.random.split(key)
    params = {
        "nnx": {"w": jax.random.normal(k1, (3, 4))},
        # a zero-initialised scale (the last BatchNorm of a ResNet block): nothing
        # before it gets a gradient until it has moved
        "linen": {"scale": jnp.zeros(()), "w": jax.random.normal(k2, (4, 1))},
    }
    return {**params, "opt": warmup(0.1).init(params)}


def scaled_loss(params, batch):
    x, y = batch
    h = jnp.tanh(x @ params["nnx"]["w"]) @ params["linen"]["w"]
    return jnp.mean((params["linen"]["scale"] * h - y) ** 2)


def scaled_step(params, batch, lr):
    p = train(params)
    grads = jax.grad(scaled_loss)(p, batch)
    updates, state = warmup(lr).update(grads, params["opt"], p)
    return {**optax.apply_updates(p, updates), "opt": state}


def test_a_zero_initialised_scale_behind_a_warmup_from_zero_is_no_dead_half():
    # Step 1 runs at lr 0 and moves nothing, step 2 moves the scale: only the
    # gradient at the trajectory's last point reaches the 'nnx' half.
    case = hc.HybridCase(
        name="zero-scale-warmup",
        init=scaled_init,
        loss=lambda p, b: scaled_loss(train(p), b),
        batches=batches(),
        step=scaled_step,
        non_trainable=("opt",),
        tx=warmup,
    )
    g0 = jax.grad(scaled_loss)(
        train(scaled_init(jax.random.PRNGKey(0))), (jnp.ones((4, 3)), jnp.ones((4, 1)))
    )
    assert not np.any(g0["nnx"]["w"])
    results = verdicts(case, UPDATES)
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(UPDATES, HELD)


# -- the assertions ------------------------------------------------------------------

OLD = {"a": {"w": jnp.ones(3)}, "b": {"w": jnp.ones(2)}}
GRADS = {"a": {"w": jnp.full(3, 0.5)}, "b": {"w": jnp.full(2, 0.5)}}
MOVED = {"a": {"w": jnp.full(3, 0.9)}, "b": OLD["b"]}


def test_the_optimizers_own_update_says_which_leaves_must_move():
    zero = jax.tree.map(jnp.zeros_like, GRADS)
    hc.assert_update_changes_exactly_graded_leaves(
        OLD, OLD, GRADS, lr=0.1, expected=zero
    )
    with pytest.raises(AssertionError, match=r"half 'b' .*own update at this step"):
        hc.assert_update_changes_exactly_graded_leaves(
            OLD, MOVED, GRADS, lr=0.1, expected=GRADS
        )
    hc.assert_update_changes_exactly_graded_leaves(
        OLD, MOVED, GRADS, lr=0.1, moved_elsewhere={("b", "['w']")}
    )


def test_every_trainable_is_trained_forgives_a_late_start_not_a_leaf_never_moved():
    late = [OLD, MOVED, {"a": MOVED["a"], "b": {"w": jnp.zeros(2)}}]
    hc.assert_every_trainable_is_trained(late, [GRADS, GRADS], lr=0.1)
    never = [OLD, MOVED, {"a": {"w": jnp.zeros(3)}, "b": OLD["b"]}]
    with pytest.raises(AssertionError, match=r"step 1: half 'b' leaf \['w'\]"):
        hc.assert_every_trainable_is_trained(never, [GRADS, GRADS], lr=0.1)


def _counts(*values):
    return {"rng": {"count": np.array(values, np.uint32)}}


def test_several_forwards_per_update_are_read_from_the_rng_counts():
    old, forward = _counts(1, 4), _counts(2, 5)
    assert forwards_per_step(old, _counts(3, 6), forward) == 2
    assert forwards_per_step(old, _counts(2, 5), forward) == 1
    assert forwards_per_step(old, _counts(3, 5), forward) == 1  # disagree
    hc.assert_state_is_threaded(old, _counts(3, 6), forward, forwards=2)
    with pytest.raises(AssertionError, match=r"updates it to 3 \(2 forward passes\)"):
        hc.assert_state_is_threaded(old, _counts(2, 6), forward, forwards=2)
    with pytest.raises(ValueError, match="forwards must be a positive int"):
        hc.assert_state_is_threaded(old, old, forward, forwards=0)


def test_statistics_of_several_forwards_must_still_be_updated():
    old = {"state": {"mean": np.zeros(2, np.float32)}}
    forward = {"state": {"mean": np.array([0.1, 0.2], np.float32)}}
    micro = {"state": {"mean": np.array([0.15, 0.1], np.float32)}}
    hc.assert_state_is_threaded(old, micro, forward, forwards=2)
    with pytest.raises(AssertionError, match=r"stale"):
        hc.assert_state_is_threaded(old, old, forward, forwards=2)
