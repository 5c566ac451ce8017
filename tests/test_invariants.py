"""Each assertion, fed hand-made broken inputs, fails with a message naming the
half, the leaf and the values; misuse raises TypeError/ValueError."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from hybridcheck import compat
from hybridcheck import invariants as inv
from hybridcheck.invariants import error_regex

OLD: dict[str, Any] = {
    "nnx": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([0.5, 0.0])},
    "linen": {"params": {"kernel": jnp.array([[3.0], [1.0]])}},
}
G: dict[str, Any] = {
    "nnx": {"kernel": jnp.array([[0.1, 0.2]]), "bias": jnp.array([0.0, 0.0])},
    "linen": {"params": {"kernel": jnp.array([[-0.5], [0.25]])}},
}
LR = 0.1


def sgd(old, g, lr=LR, sign=-1.0):
    import jax

    return jax.tree.map(lambda p, d: p + sign * lr * d, old, g)


def test_halves_of_misuse():
    with pytest.raises(TypeError, match="params must hold one pytree per half"):
        inv.halves_of(jnp.ones(3))
    with pytest.raises(ValueError, match="at least two halves"):
        inv.halves_of({"only": 1})


def test_grads_match_params_names_half_and_leaf():
    inv.assert_grads_match_params(OLD, G)
    bad = {**G, "linen": {"params": {"kernel": jnp.ones((2,), jnp.float32)}}}
    with pytest.raises(
        AssertionError,
        match=error_regex(
            "grads_match_params", "half 'linen' leaf ['params']['kernel']"
        ),
    ):
        inv.assert_grads_match_params(OLD, bad)
    missing = {**G, "nnx": {"kernel": G["nnx"]["kernel"]}}
    with pytest.raises(
        AssertionError, match=error_regex("grads_match_params", "'nnx'")
    ):
        inv.assert_grads_match_params(OLD, missing)


def test_grads_match_params_rejects_different_halves():
    with pytest.raises(ValueError, match="same halves"):
        inv.assert_grads_match_params(OLD, {"a": 1, "b": 2})


def test_update_changes_exactly_graded_leaves():
    inv.assert_update_changes_exactly_graded_leaves(OLD, sgd(OLD, G), G, lr=LR)
    stale = {**sgd(OLD, G), "linen": OLD["linen"]}
    with pytest.raises(
        AssertionError,
        match=error_regex(
            "update_changes_exactly_graded_leaves",
            "half 'linen' leaf ['params']['kernel']",
            "did not change",
        ),
    ):
        inv.assert_update_changes_exactly_graded_leaves(OLD, stale, G, lr=LR)
    moved = sgd(OLD, G)
    moved["nnx"]["bias"] = moved["nnx"]["bias"] + 1.0  # zero gradient, yet moved
    with pytest.raises(
        AssertionError,
        match=error_regex(
            "update_changes_exactly_graded_leaves", "leaf ['bias']", "gradient is zero"
        ),
    ):
        inv.assert_update_changes_exactly_graded_leaves(OLD, moved, G, lr=LR)
    inv.assert_update_changes_exactly_graded_leaves(
        OLD, moved, G, lr=LR, allow_change_without_grad=True
    )


def test_update_check_ignores_updates_below_float_resolution():
    old = {"a": {"w": jnp.array([1e4], jnp.float32)}, "b": {"w": jnp.array([1.0])}}
    g = {"a": {"w": jnp.array([1e-9], jnp.float32)}, "b": {"w": jnp.array([1.0])}}
    # lr * g = 1e-10 is far below one ulp of 1e4: no step can move it.
    inv.assert_update_changes_exactly_graded_leaves(old, sgd(old, g), g, lr=0.1)


def test_update_check_ignores_updates_flushed_as_subnormal():
    import jax

    old = {"a": {"w": jnp.zeros(1, jnp.float32)}, "b": {"w": jnp.array([1.0])}}
    g = {"a": {"w": jnp.array([1e-37], jnp.float32)}, "b": {"w": jnp.array([1.0])}}
    # 1e-3 * 1e-37 is subnormal: XLA on CPU flushes the result to -0.0.
    new = jax.jit(lambda o, d: sgd(o, d, lr=1e-3))(old, g)
    inv.assert_update_changes_exactly_graded_leaves(old, new, g, lr=1e-3)


def test_every_half_gets_gradient_across_examples():
    g_all = {**G, "nnx": {**G["nnx"], "bias": jnp.array([0.1, -0.1])}}
    zero_linen = {**g_all, "linen": {"params": {"kernel": jnp.zeros((2, 1))}}}
    # One example with a zero half is fine when another example reaches it.
    inv.assert_every_half_gets_gradient([zero_linen, g_all])
    with pytest.raises(
        AssertionError,
        match=error_regex("every_half_gets_gradient", "half 'linen'", "all 2 examples"),
    ):
        inv.assert_every_half_gets_gradient([zero_linen, zero_linen])
    # The nnx bias is zero in G on every example: named as a dead leaf.
    with pytest.raises(
        AssertionError,
        match=error_regex("every_half_gets_gradient", "half 'nnx': leaves ['bias']"),
    ):
        inv.assert_every_half_gets_gradient([G, G])
    inv.assert_every_half_gets_gradient(
        [G], frozen=lambda half, path: half == "nnx" and path == "['bias']"
    )
    with pytest.raises(ValueError, match="at least one example"):
        inv.assert_every_half_gets_gradient([])


def quadratic_loss_at(scale):
    """L(lr) for L(p) = 0.5 * ||p||^2 and a step p - scale(lr) * lr * p, p = 1s."""

    def loss_at(lr):
        return 0.5 * 4 * (1.0 - scale(lr) * lr) ** 2

    return loss_at


def test_first_order_ratio():
    g_sq = 4.0  # gradient of 0.5||p||^2 at p = (1,1,1,1) is p
    inv.assert_loss_decrease_first_order(quadratic_loss_at(lambda lr: 1.0), g_sq)
    with pytest.raises(
        AssertionError,
        match=error_regex("loss_decrease_first_order", "should tend to 1"),
    ):  # step size lr^2 instead of lr: ratio ~ lr
        inv.assert_loss_decrease_first_order(quadratic_loss_at(lambda lr: lr), g_sq)

    def one_half(lr):  # only half the coordinates move: ratio -> 0.5
        return 0.5 * 2 * (1.0 - lr) ** 2 + 0.5 * 2

    with pytest.raises(AssertionError, match=r"lr=1e-06: 0\.5"):
        inv.assert_loss_decrease_first_order(one_half, g_sq)
    with pytest.raises(inv.InvariantNotApplicable, match="gradient vanishes"):
        inv.assert_loss_decrease_first_order(lambda lr: 1.0, 0.0)
    with pytest.raises(ValueError, match="lrs must be positive"):
        inv.assert_loss_decrease_first_order(lambda lr: 1.0, 1.0, lrs=(0.0,))


def test_descent_per_half():
    inv.assert_update_is_descent(OLD, sgd(OLD, G), G)
    wrong = {**sgd(OLD, G), "linen": sgd(OLD, G, sign=1.0)["linen"]}
    with pytest.raises(
        AssertionError, match=error_regex("update_is_descent", "half 'linen'", "> 0")
    ):
        inv.assert_update_is_descent(OLD, wrong, G)


def test_sgd_update_exact():
    inv.assert_sgd_update(OLD, sgd(OLD, G), G, lr=LR)
    with pytest.raises(
        AssertionError, match=error_regex("sgd_update", "half 'nnx' leaf ['kernel']")
    ):
        inv.assert_sgd_update(OLD, sgd(OLD, G, lr=2 * LR), G, lr=LR)


def test_jit_eager_and_sharded_closeness():
    inv.assert_trees_close_jit_eager(OLD, sgd(OLD, G, lr=1e-9))
    with pytest.raises(
        AssertionError, match=error_regex("jit_matches_eager", "['nnx']['kernel']")
    ):
        inv.assert_trees_close_jit_eager(OLD, sgd(OLD, G))
    with pytest.raises(
        AssertionError, match=error_regex("sharded_matches_single_device", "sharded=")
    ):
        inv.assert_sharded_matches_single_device(OLD, sgd(OLD, G))


def test_finite_differences_catch_a_wrong_gradient():
    with compat.enable_x64():
        _finite_differences_catch_a_wrong_gradient()


def _finite_differences_catch_a_wrong_gradient():
    import jax

    @jax.custom_vjp
    def bad_square(x):
        return x**2

    bad_square.defvjp(lambda x: (x**2, x), lambda x, ct: (ct * x,))  # should be 2x

    params = {
        "a": jnp.array([1.0, 2.0], jnp.float64),
        "b": jnp.array([0.5], jnp.float64),
    }
    fns = {
        "a": lambda a: jnp.sum(bad_square(a)) + jnp.sum(params["b"] ** 2),
        "b": lambda b: jnp.sum(params["a"] ** 2) + jnp.sum(b**2),
    }
    with pytest.raises(
        AssertionError, match=error_regex("grads_match_finite_differences", "half 'a'")
    ):
        inv.assert_grads_match_finite_differences(fns, params)
    good = {**fns, "a": lambda a: jnp.sum(a**2)}
    inv.assert_grads_match_finite_differences(good, params)
    with pytest.raises(ValueError, match="one function per half"):
        inv.assert_grads_match_finite_differences({"a": fns["a"]}, params)


def test_finite_differences_tolerate_a_relu_kink():
    with compat.enable_x64():
        _finite_differences_tolerate_a_relu_kink()


def _finite_differences_tolerate_a_relu_kink():
    params = {
        "a": jnp.array([0.0, 1.0], jnp.float64),
        "b": jnp.array([1.0], jnp.float64),
    }
    fns = {  # relu at exactly 0: finite differences see slope 1/2, autodiff 0
        "a": lambda a: jnp.sum(jnp.maximum(a, 0.0)),
        "b": lambda b: jnp.sum(b),
    }
    inv.assert_grads_match_finite_differences(fns, params)


def test_deterministic_finite_inputs():
    inv.assert_bitwise_deterministic(OLD, OLD)
    with pytest.raises(
        AssertionError, match=error_regex("deterministic", "runs differ")
    ):
        inv.assert_bitwise_deterministic(OLD, sgd(OLD, G, lr=1e-3))
    inv.assert_all_finite(OLD)
    with pytest.raises(
        AssertionError, match=error_regex("all_finite", "1 of 2 values")
    ):
        inv.assert_all_finite({"x": jnp.array([1.0, jnp.nan])})


def test_inputs_unchanged_detects_mutation_and_donation():
    import jax

    arr = np.array([1.0, 2.0])
    snap = np.array(arr, copy=True)
    inv.assert_inputs_unchanged(snap, arr)
    arr[0] = 5.0
    with pytest.raises(
        AssertionError, match=error_regex("inputs_unchanged", "changed")
    ):
        inv.assert_inputs_unchanged(snap, arr)
    x = jnp.array([1.0, 2.0])
    snap_x = np.asarray(x).copy()
    jax.jit(lambda v: v * 2, donate_argnums=0)(x)
    if x.is_deleted():  # CPU may ignore donation; then there is nothing to detect
        with pytest.raises(AssertionError, match="deleted"):
            inv.assert_inputs_unchanged(snap_x, x)


def test_traces_within():
    inv.assert_traces_within(2, 2)
    with pytest.raises(AssertionError, match=error_regex("retrace_budget", "3 times")):
        inv.assert_traces_within(3, 2)
