"""step_uses_batch: the same params on other batches must move where the gradient
changes sign, whatever the optimizer; correct steps that need not move are n/a."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybridcheck.describe.subject import Example, Subject
from hybridcheck.invariants import (
    InvariantNotApplicable,
    assert_step_uses_batch,
    error_regex,
)
from hybridcheck.invariants._batch_variants import batch_variants
from hybridcheck.invariants.batch import OtherBatch, check_step_uses_batch

IN, OUT, ROWS = 3, 2, 4


def loss(params, batch):
    x, y = batch["x"], batch["y"]
    hidden = jnp.tanh(x @ params["a"]["w"])
    return jnp.mean((hidden @ params["b"]["w"] - y) ** 2)


def init(seed: int = 0):
    # numpy draws, not jax.random: JAX 0.5 changed what a key draws (threefry
    # partitionable), and these tests name which variant catches which bug on one
    # fixed example, the same on every supported release
    rng = np.random.default_rng(seed)
    return {
        "a": {"w": jnp.asarray(rng.normal(size=(IN, 4)), jnp.float32)},
        "b": {"w": jnp.asarray(rng.normal(size=(4, OUT)), jnp.float32)},
    }


OPTIMIZERS = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adam": optax.adam,
    "adamw": lambda lr: optax.adamw(lr, weight_decay=1e-2),
    "clipped-adam": lambda lr: optax.chain(
        optax.clip_by_global_norm(0.1), optax.adam(lr)
    ),
}


def make_step(tx, *, fixed=None, ignore_y=False, first_rows=False):
    """``step(params, batch, lr)``: one optax step from a fresh state; the flags
    make it ignore its batch, its targets, or all rows but the first half."""

    def step(params, batch, lr):
        if fixed is not None:
            batch = fixed  # BUG: a batch captured once
        if ignore_y:
            batch = {**batch, "y": jnp.zeros_like(batch["y"])}  # BUG
        if first_rows:
            half = batch["x"].shape[0] // 2
            batch = {k: v[:half] for k, v in batch.items()}  # BUG: first micro-batch
        opt = tx(lr)
        grads = jax.grad(loss)(params, batch)
        updates, _ = opt.update(grads, opt.init(params), params)
        return optax.apply_updates(params, updates)

    return step


def subject(step):
    return Subject(loss=loss, step=step, halves=("a", "b"), sgd=False)


def batch(seed: int = 1):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(ROWS, IN)).astype(np.float32),
        "y": rng.normal(size=(ROWS, OUT)).astype(np.float32),
    }


def test_variants_change_one_part_and_keep_types():
    b: dict[str, Any] = {
        "x": np.arange(8, dtype=np.float32).reshape(4, 2),
        "label": jnp.array([0, 1, 1, 2], jnp.int32),
        "mask": np.array([True, False, True, True]),
        "rng": jax.random.PRNGKey(0),
    }
    variants = batch_variants(b)
    assert [v.what for v in variants] == [
        "its leaf ['label']",
        "its leaf ['x']",
        "rows 2..3 of every leaf",
        "rows 0..1 of every leaf",
    ]
    for v in variants:
        for key in b:
            assert type(v.batch[key]) is type(b[key]), (v.what, key)
            assert np.asarray(v.batch[key]).dtype == np.asarray(b[key]).dtype
        # randomness and masks are never changed
        assert np.array_equal(v.batch["rng"], b["rng"])
        assert np.array_equal(v.batch["mask"], b["mask"])
    label, x, last, first = (v.batch for v in variants)
    assert np.array_equal(label["x"], b["x"])
    assert not np.array_equal(label["label"], b["label"])
    assert np.array_equal(x["label"], b["label"])
    assert np.array_equal(last["x"][:2], b["x"][:2])
    assert not np.array_equal(last["x"][2:], b["x"][2:])
    assert np.array_equal(first["x"][2:], b["x"][2:])


def test_constant_and_zero_leaves_are_still_changed():
    b = (np.zeros((3, 2), np.float32), np.full((3,), 4, np.int32))
    for v in batch_variants(b):
        assert not all(np.array_equal(a, c) for a, c in zip(v.batch, b, strict=True)), (
            v.what
        )


def test_other_batches_do_not_retrace_the_step():
    s = subject(make_step(optax.adam))
    e = Example(init(), batch(), 0.01)
    check_step_uses_batch(s, e)
    assert s.traced.count == 1


SEEDS = range(8)
"""Examples per optimizer: whether another batch flips a significant gradient sign
depends on the drawn example (as in a verify run, which draws several)."""


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_correct_step_holds_and_batch_ignoring_steps_fail(opt):
    tx = OPTIMIZERS[opt]
    examples = [Example(init(seed), batch(seed + 1), 0.01) for seed in SEEDS]
    for e in examples:
        check_step_uses_batch(subject(make_step(tx)), e)
    bugs = {
        # a fixed batch differs from the example's in every leaf: any variant may say so
        "fixed": (dict(fixed=batch(99)), "changed"),
        "ignore_y": (dict(ignore_y=True), "its leaf ['y'] changed"),
        "first_rows": (dict(first_rows=True), "rows 2..3 of every leaf changed"),
    }
    for name, (flags, what) in bugs.items():
        messages = []
        for e in examples:
            try:
                check_step_uses_batch(subject(make_step(tx, **flags)), e)
            except AssertionError as err:
                messages.append(str(err))
        caught = len(messages)
        pattern = error_regex("step_uses_batch", "half '", what)
        assert all(re.search(pattern, m) for m in messages), messages
        assert caught, f"{name}: missed on all {len(examples)} examples"


def test_lr_zero_and_zero_gradient_are_not_applicable():
    params = init()
    with pytest.raises(InvariantNotApplicable, match="need not"):
        check_step_uses_batch(
            subject(make_step(optax.sgd)), Example(params, batch(), 0.0)
        )
    flat = {"a": {"w": jnp.zeros((IN, 4))}, "b": {"w": jnp.zeros((4, OUT))}}
    zero = {
        "x": np.zeros((ROWS, IN), np.float32),
        "y": np.zeros((ROWS, OUT), np.float32),
    }
    s = Subject(
        loss=lambda p, b: loss(p, b) * 0.0,
        step=make_step(optax.adam),
        halves=("a", "b"),
    )
    with pytest.raises(InvariantNotApplicable, match="need not"):
        check_step_uses_batch(s, Example(flat, zero, 0.1))


def test_assertion_needs_gradients_where_a_leaf_did_not_move_differently():
    old, new = {"a": np.zeros(2)}, {"a": np.ones(2)}
    with pytest.raises(ValueError, match="grads"):
        assert_step_uses_batch(old, new, new, [OtherBatch("its leaf [0]", new)])


def test_a_leaf_the_step_left_in_place_needs_no_gradient():
    # No sign flip can count where the step did not move the leaf (lr 0, an update
    # rounded away), so the other batch's gradient is not needed to judge it.
    same = {"a": np.ones(2)}
    with pytest.raises(InvariantNotApplicable):
        assert_step_uses_batch(same, same, same, [OtherBatch("its leaf [0]", same)])


def _outcome(step, e):
    try:
        check_step_uses_batch(subject(step), e)
    except InvariantNotApplicable:
        return "n/a"
    except AssertionError:
        return "failed"
    return "held"


@settings(max_examples=30, derandomize=True, database=None, deadline=None)
@given(
    opt=st.sampled_from(sorted(OPTIMIZERS)),
    seed=st.integers(0, 50),
    lr=st.sampled_from([1e-4, 1e-2, 0.5]),
    data=hnp.arrays(
        np.float32, (ROWS, IN + OUT), elements={"min_value": -3, "max_value": 3}
    ),
)
def test_correct_steps_never_fail_and_ignored_targets_are_caught(opt, seed, lr, data):
    e = Example(init(seed), {"x": data[:, :IN], "y": data[:, IN:]}, lr)
    # n/a is allowed (lr 1e-4 updates rounded away, an all-zero batch), never failed
    assert _outcome(make_step(OPTIMIZERS[opt]), e) in ("held", "n/a")
    buggy = _outcome(make_step(OPTIMIZERS[opt], ignore_y=True), e)
    assert buggy in ("failed", "n/a", "held")
    if lr >= 1e-2 and _y_change_flips_a_gradient(e):
        assert buggy == "failed", (opt, seed, lr, data)


def _y_change_flips_a_gradient(e):
    """Whether the batch with y changed flips the sign of a gradient entry of at
    least a tenth of its leaf's largest (and that largest is not negligible)."""
    (other,) = [v.batch for v in batch_variants(e.batch) if "['y']" in v.what]
    g, g2 = jax.grad(loss)(e.params, e.batch), jax.grad(loss)(e.params, other)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g2), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        top = max(np.abs(a).max(), np.abs(b).max())
        if top > 1e-3 and np.any(
            (a * b < 0) & (np.minimum(abs(a), abs(b)) >= 0.1 * top)
        ):
            return True
    return False
