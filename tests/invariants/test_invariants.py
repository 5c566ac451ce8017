"""Each assertion, as a table (optax style): a passing input, a failing input and the
message the failure must match (naming the half, the leaf and the values); then the
cases a table row cannot express (tolerances, kinks, misuse)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcheck import compat
from hybridcheck import invariants as inv
from hybridcheck.describe.trees import join_halves, split_halves
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
    return jax.tree.map(lambda p, d: p + sign * lr * d, old, g)


def with_half(tree, half, value):
    return {**tree, half: value}


def moved_without_grad():
    moved = sgd(OLD, G)
    moved["nnx"]["bias"] = moved["nnx"]["bias"] + 1.0  # zero gradient, yet moved
    return moved


G_ALL = with_half(G, "nnx", {**G["nnx"], "bias": jnp.array([0.1, -0.1])})
ZERO_LINEN = with_half(G_ALL, "linen", {"params": {"kernel": jnp.zeros((2, 1))}})


def quadratic_loss_at(scale):
    """L(lr) for L(p) = 0.5 * ||p||^2 and a step p - scale(lr) * lr * p, p = 1s."""

    def loss_at(lr):
        return 0.5 * 4 * (1.0 - scale(lr) * lr) ** 2

    return loss_at


def one_half_moves(lr):  # only half the coordinates move: ratio -> 0.5
    return 0.5 * 2 * (1.0 - lr) ** 2 + 0.5 * 2


FLIPPED = jax.tree.map(lambda g: -g, G_ALL)  # the gradient on another batch


def other_batch(new, grads=None):
    return inv.batch.OtherBatch("its leaf [1]", new, grads)


class Row(NamedTuple):
    """One assertion: ``passes()`` returns normally, ``fails()`` raises matching."""

    id: str
    passes: Callable[[], None]
    fails: Callable[[], None]
    invariant: str
    parts: tuple[str, ...]


TABLE = [
    Row(
        "grads_match_params/leaf",
        lambda: inv.assert_grads_match_params(OLD, G),
        lambda: inv.assert_grads_match_params(
            OLD, with_half(G, "linen", {"params": {"kernel": jnp.ones(2)}})
        ),
        "grads_match_params",
        ("half 'linen' leaf ['params']['kernel']", "but the gradient"),
    ),
    Row(
        "grads_match_params/missing-leaf",
        lambda: inv.assert_grads_match_params(OLD, G),
        lambda: inv.assert_grads_match_params(
            OLD, with_half(G, "nnx", {"kernel": G["nnx"]["kernel"]})
        ),
        "grads_match_params",
        ("half 'nnx': the gradient has another tree structure",),
    ),
    Row(
        "grads_match_params/new-params",
        lambda: inv.assert_grads_match_params(OLD, G, new_params=sgd(OLD, G)),
        lambda: inv.assert_grads_match_params(
            OLD,
            G,
            new_params=with_half(OLD, "linen", {"params": OLD["linen"]}),
        ),
        "grads_match_params",
        ("half 'linen': the step's new params has another tree structure",),
    ),
    Row(
        "update_changes_exactly_graded_leaves/dropped",
        lambda: inv.assert_update_changes_exactly_graded_leaves(
            OLD, sgd(OLD, G), G, lr=LR
        ),
        lambda: inv.assert_update_changes_exactly_graded_leaves(
            OLD, with_half(sgd(OLD, G), "linen", OLD["linen"]), G, lr=LR
        ),
        "update_changes_exactly_graded_leaves",
        ("half 'linen' leaf ['params']['kernel']", "did not change"),
    ),
    Row(
        "update_changes_exactly_graded_leaves/moved-without-grad",
        lambda: inv.assert_update_changes_exactly_graded_leaves(
            OLD, moved_without_grad(), G, lr=LR, allow_change_without_grad=True
        ),
        lambda: inv.assert_update_changes_exactly_graded_leaves(
            OLD, moved_without_grad(), G, lr=LR
        ),
        "update_changes_exactly_graded_leaves",
        ("leaf ['bias']", "gradient is zero"),
    ),
    Row(
        "every_half_gets_gradient/half",
        lambda: inv.assert_every_half_gets_gradient([ZERO_LINEN, G_ALL]),
        lambda: inv.assert_every_half_gets_gradient([ZERO_LINEN, ZERO_LINEN]),
        "every_half_gets_gradient",
        ("half 'linen'", "all 2 examples"),
    ),
    Row(
        "every_half_gets_gradient/leaf",
        lambda: inv.assert_every_half_gets_gradient(
            [G], frozen=lambda half, path: half == "nnx" and path == "['bias']"
        ),
        lambda: inv.assert_every_half_gets_gradient([G, G]),
        "every_half_gets_gradient",
        ("half 'nnx': leaves ['bias']",),
    ),
    Row(
        "loss_decrease_first_order/lr-squared",
        lambda: inv.assert_loss_decrease_first_order(
            quadratic_loss_at(lambda lr: 1.0), 4.0
        ),
        lambda: inv.assert_loss_decrease_first_order(
            quadratic_loss_at(lambda lr: lr), 4.0
        ),
        "loss_decrease_first_order",
        ("should tend to 1",),
    ),
    Row(
        "loss_decrease_first_order/one-half",
        lambda: inv.assert_loss_decrease_first_order(
            quadratic_loss_at(lambda lr: 1.0), 4.0
        ),
        lambda: inv.assert_loss_decrease_first_order(one_half_moves, 4.0),
        "loss_decrease_first_order",
        ("lr=1e-06: 0.5",),
    ),
    Row(
        "update_is_descent",
        lambda: inv.assert_update_is_descent(OLD, sgd(OLD, G), G),
        lambda: inv.assert_update_is_descent(
            OLD, with_half(sgd(OLD, G), "linen", sgd(OLD, G, sign=1.0)["linen"]), G
        ),
        "update_is_descent",
        ("half 'linen'", "> 0"),
    ),
    Row(
        "sgd_update",
        lambda: inv.assert_sgd_update(OLD, sgd(OLD, G), G, lr=LR),
        lambda: inv.assert_sgd_update(OLD, sgd(OLD, G, lr=2 * LR), G, lr=LR),
        "sgd_update",
        ("half 'nnx' leaf ['kernel']",),
    ),
    Row(
        "jit_matches_eager",
        lambda: inv.assert_jit_matches_eager(OLD, sgd(OLD, G, lr=1e-9)),
        lambda: inv.assert_jit_matches_eager(OLD, sgd(OLD, G)),
        "jit_matches_eager",
        ("['nnx']['kernel']",),
    ),
    Row(
        "sharded_matches_single_device",
        lambda: inv.assert_sharded_matches_single_device(OLD, sgd(OLD, G, lr=1e-9)),
        lambda: inv.assert_sharded_matches_single_device(OLD, sgd(OLD, G)),
        "sharded_matches_single_device",
        ("sharded=",),
    ),
    Row(
        "deterministic",
        lambda: inv.assert_deterministic(OLD, OLD),
        lambda: inv.assert_deterministic(OLD, sgd(OLD, G, lr=1e-3)),
        "deterministic",
        ("runs differ",),
    ),
    Row(
        "all_finite",
        lambda: inv.assert_all_finite(OLD),
        lambda: inv.assert_all_finite({"x": jnp.array([1.0, jnp.nan])}),
        "all_finite",
        ("1 of 2 values",),
    ),
    Row(
        "inputs_unchanged",
        lambda: inv.assert_inputs_unchanged(np.array([1.0, 2.0]), np.array([1.0, 2.0])),
        lambda: inv.assert_inputs_unchanged(np.array([1.0, 2.0]), np.array([5.0, 2.0])),
        "inputs_unchanged",
        ("input<root>: value changed",),
    ),
    Row(
        "state_is_threaded",
        lambda: inv.assert_state_is_threaded(
            {"bn": {"mean": jnp.zeros(2)}},
            {"bn": {"mean": jnp.ones(2)}},
            {"bn": {"mean": jnp.ones(2)}},
        ),
        lambda: inv.assert_state_is_threaded(
            {"bn": {"mean": jnp.zeros(2)}},
            {"bn": {"mean": jnp.zeros(2)}},
            {"bn": {"mean": jnp.ones(2)}},
        ),
        "state_is_threaded",
        ("half 'bn' leaf ['mean'][0]", "came back unchanged (stale)"),
    ),
    Row(
        "randomness_is_used",
        lambda: inv.assert_randomness_is_used([False, True], advanced=[True]),
        lambda: inv.assert_randomness_is_used([True], advanced=[False, False]),
        "randomness_is_used",
        ("on all 2 examples", "reuses the mask"),
    ),
    Row(
        "every_trainable_is_trained",
        lambda: inv.assert_every_trainable_is_trained(
            [OLD, sgd(OLD, G), sgd(sgd(OLD, G), G)], [G, G], lr=LR
        ),
        lambda: inv.assert_every_trainable_is_trained(  # 'nnx' never moves
            [
                OLD,
                with_half(sgd(OLD, G), "nnx", OLD["nnx"]),
                with_half(sgd(sgd(OLD, G), G), "nnx", OLD["nnx"]),
            ],
            [G, G],
            lr=LR,
        ),
        "every_trainable_is_trained",
        ("step 1: half 'nnx' leaf ['kernel']", "did not change"),
    ),
    Row(
        "update_matches_tx",
        lambda: inv.assert_update_matches_tx([sgd(OLD, G)], [sgd(OLD, G)], [OLD]),
        lambda: inv.assert_update_matches_tx(
            [sgd(OLD, G)], [sgd(OLD, G, lr=0.2)], [OLD]
        ),
        "update_matches_tx",
        ("step 1: half 'nnx' leaf ['kernel']", "tx gives"),
    ),
    Row(
        "step_uses_batch",
        # with y changed, the gradient flips sign: an SGD step moves differently ...
        lambda: inv.assert_step_uses_batch(
            OLD, sgd(OLD, G_ALL), G_ALL, [other_batch(sgd(OLD, FLIPPED))]
        ),
        # ... a step that ignores its batch returns the same update
        lambda: inv.assert_step_uses_batch(
            OLD, sgd(OLD, G_ALL), G_ALL, [other_batch(sgd(OLD, G_ALL), FLIPPED)]
        ),
        "step_uses_batch",
        ("half 'nnx' leaf ['bias']", "its leaf [1] changed", "changes sign"),
    ),
    Row(
        "retrace_budget",
        lambda: inv.assert_retrace_budget(2, 2),
        lambda: inv.assert_retrace_budget(3, 2),
        "retrace_budget",
        ("3 times",),
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=[r.id for r in TABLE])
def test_assertion_passes_and_fails_naming_the_culprit(row):
    row.passes()
    with pytest.raises(AssertionError, match=error_regex(row.invariant, *row.parts)):
        row.fails()


def test_every_public_assertion_has_a_table_row():
    asserted = {
        name.removeprefix("assert_") for name in inv.__all__ if "assert_" in name
    }
    # Finite differences need float64 and a custom VJP: see the tests below. The
    # migration assertions judge deviations across examples: test_migration.py; the
    # partitioning one traces a converter: test_migration_sharding.py.
    from hybridcheck.invariants import migration
    from hybridcheck.invariants.migration import sharding as partitioning

    tabled = (
        {r.invariant for r in TABLE}
        | {"grads_match_finite_differences"}
        | {
            n.removeprefix("assert_")
            for module in (migration, partitioning)
            for n in module.__all__
            if "assert_" in n
        }
        - {"matches_before"}
    )
    assert asserted == tabled


def test_split_and_join_halves_are_inverse():
    from hybridcheck.seed import HybridParams

    for tree, labels in (
        (HybridParams({"k": 1}, {"k": 2}), None),
        ({"a": 1, "b": 2}, None),
        ((1, 2), ("x", "y")),
        ([1, 2], None),
    ):
        halves = split_halves(tree, labels=labels)
        assert join_halves(tree, halves) == tree
    assert list(split_halves((1, 2))) == ["half0", "half1"]


def test_split_halves_misuse():
    with pytest.raises(TypeError, match="params must hold one pytree per half"):
        split_halves(jnp.ones(3))
    with pytest.raises(ValueError, match="at least two halves"):
        split_halves({"only": 1})
    with pytest.raises(ValueError, match="labels name 3"):
        split_halves((1, 2), labels=("a", "b", "c"))


def test_pairing_rejects_different_halves():
    with pytest.raises(ValueError, match="same halves"):
        inv.assert_grads_match_params(OLD, {"a": 1, "b": 2})


def test_update_check_ignores_updates_below_float_resolution():
    old = {"a": {"w": jnp.array([1e4], jnp.float32)}, "b": {"w": jnp.array([1.0])}}
    g = {"a": {"w": jnp.array([1e-9], jnp.float32)}, "b": {"w": jnp.array([1.0])}}
    # lr * g = 1e-10 is far below one ulp of 1e4: no step can move it.
    inv.assert_update_changes_exactly_graded_leaves(old, sgd(old, g), g, lr=0.1)


def test_update_check_ignores_updates_flushed_as_subnormal():
    old = {"a": {"w": jnp.zeros(1, jnp.float32)}, "b": {"w": jnp.array([1.0])}}
    g = {"a": {"w": jnp.array([1e-37], jnp.float32)}, "b": {"w": jnp.array([1.0])}}
    # 1e-3 * 1e-37 is subnormal: XLA on CPU flushes the result to -0.0.
    new = jax.jit(lambda o, d: sgd(o, d, lr=1e-3))(old, g)
    inv.assert_update_changes_exactly_graded_leaves(old, new, g, lr=1e-3)


def test_every_half_gets_gradient_needs_an_example():
    with pytest.raises(ValueError, match="at least one example"):
        inv.assert_every_half_gets_gradient([])


def test_first_order_preconditions_and_misuse():
    with pytest.raises(inv.InvariantNotApplicable, match="gradient vanishes"):
        inv.assert_loss_decrease_first_order(lambda lr: 1.0, 0.0)
    with pytest.raises(ValueError, match="lrs must be positive"):
        inv.assert_loss_decrease_first_order(lambda lr: 1.0, 1.0, lrs=(0.0,))


def test_finite_differences_catch_a_wrong_gradient():
    with compat.enable_x64():

        @jax.custom_vjp
        def bad_square(x):
            return x**2

        bad_square.defvjp(lambda x: (x**2, x), lambda x, ct: (ct * x,))  # not 2x

        params = {
            "a": jnp.array([1.0, 2.0], jnp.float64),
            "b": jnp.array([0.5], jnp.float64),
        }

        def bad(p):
            return jnp.sum(bad_square(p["a"])) + jnp.sum(p["b"] ** 2)

        with pytest.raises(
            AssertionError,
            match=error_regex("grads_match_finite_differences", "half 'a'"),
        ) as caught:
            inv.assert_grads_match_finite_differences(bad, params)
        assert "half 'b'" not in str(caught.value)  # b's gradient is right

        def good(p):
            return jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2)

        inv.assert_grads_match_finite_differences(good, params)
        # Only the halves asked for are checked.
        inv.assert_grads_match_finite_differences(bad, params, halves=["b"])
        with pytest.raises(ValueError, match="halves must name halves of params"):
            inv.assert_grads_match_finite_differences(good, params, halves=["c"])


def test_finite_differences_tolerate_a_relu_kink():
    with compat.enable_x64():
        params = {
            "a": jnp.array([0.0, 1.0], jnp.float64),
            "b": jnp.array([1.0], jnp.float64),
        }

        def relu(p):  # at exactly 0: finite differences see slope 1/2, autodiff 0
            return jnp.sum(jnp.maximum(p["a"], 0.0)) + jnp.sum(p["b"])

        inv.assert_grads_match_finite_differences(relu, params)


def test_inputs_unchanged_names_a_deleted_buffer():
    x = jnp.array([1.0, 2.0])
    snapshot = np.asarray(x).copy()
    x.delete()  # what a donated input looks like afterwards, on every backend
    with pytest.raises(
        AssertionError, match=error_regex("inputs_unchanged", "buffer was deleted")
    ):
        inv.assert_inputs_unchanged(snapshot, x)
