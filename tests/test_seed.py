"""Unit tests of the seed's model, step and functional core (hybridcheck.seed)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import hybridcheck as hc
from hybridcheck import seed as core
from hybridcheck.compat import nnx
from hybridcheck.describe.tracing import count_compiles
from tests.reference import reference_mixed_train_step

# jit vs eager differ by about one float32 ulp on jax >= 0.5 (COMPAT-FACTS); the
# oracle is eager, the core is jitted. 1e-6 relative is a few ulp of float32.
ULP_RTOL = 1e-6

SEED_CASES = [
    (0.0, [0.5, -1.0, 2.0], [1.0, 0.0], 0.1),
    (1.0, [0.5, -1.0, 2.0], [1.0, 0.0], 0.01),
    (7.0, [1.0, 2.0], [3.0], 0.05),
    (42.0, [0.1, 0.2, 0.3, 0.4, 0.5], [1.0, -1.0, 0.5], 0.1),
]


@pytest.mark.parametrize(
    ("seed", "x", "y", "lr"), SEED_CASES, ids=[f"seed{int(c[0])}" for c in SEED_CASES]
)
def test_matches_transcription_of_the_seed(seed, x, y, lr):
    # float32 explicitly: under JAX_ENABLE_X64 jnp.array of Python floats is float64,
    # while the step (like the seed) computes in float32.
    x, y = jnp.array(x, jnp.float32), jnp.array(y, jnp.float32)
    expected = reference_mixed_train_step(seed, x, y, lr)
    actual = hc.mixed_train_step(seed, x, y, lr)
    np.testing.assert_allclose(actual, expected, rtol=ULP_RTOL, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, core.MAX_SEED])
def test_init_is_bitwise_the_seeds_init(seed):
    params = hc.init_params(seed, 3, 2)
    linear = nnx.Linear(in_features=3, out_features=core.HIDDEN, rngs=nnx.Rngs(seed))
    linen = nn.Dense(features=2).init(
        jax.random.PRNGKey(seed + 1), jnp.zeros((core.HIDDEN,))
    )
    chex.assert_trees_all_equal(
        params.nnx,
        {
            "kernel": hc.compat.variable_array(linear.kernel),
            "bias": hc.compat.variable_array(linear.bias),
        },
    )
    chex.assert_trees_all_equal(params.linen, linen)


def test_output_shape_dtype_and_decrease(seed_example):
    out = hc.mixed_train_step(*seed_example)
    chex.assert_shape(out, (2,))
    chex.assert_type(out, jnp.float32)
    chex.assert_tree_all_finite(out)
    assert out[1] < out[0], f"loss did not decrease: before={out[0]}, after={out[1]}"


def test_accepts_int_seed_and_int_arrays():
    a = hc.mixed_train_step(3, np.array([1, 2, 3]), np.array([0, 1]), 0.1)
    b = hc.mixed_train_step(3.0, jnp.array([1.0, 2.0, 3.0]), jnp.array([0.0, 1.0]), 0.1)
    np.testing.assert_array_equal(a, b)


def test_batched_loss_is_mean_of_row_losses():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = rng.normal(size=(5, 2)).astype(np.float32)
    params = hc.init_params(4, 3, 2)
    batched = core.loss(params, jnp.asarray(x), jnp.asarray(y))
    rows = [core.loss(params, jnp.asarray(x[i]), jnp.asarray(y[i])) for i in range(5)]
    np.testing.assert_allclose(batched, np.mean(rows), rtol=1e-6)
    # And the step's loss_before on a batch is that same number.
    out = hc.mixed_train_step(4, x, y, 0.01)
    np.testing.assert_allclose(out[0], np.mean(rows), rtol=1e-6)


def test_batched_step_matches_transcription():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
    expected = reference_mixed_train_step(2.0, x, y, 0.05)
    np.testing.assert_allclose(
        hc.mixed_train_step(2.0, x, y, 0.05), expected, rtol=ULP_RTOL
    )


def test_train_step_returns_consistent_result(seed_params):
    x, y = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 0.0])
    result = hc.train_step(seed_params, x, y, 0.1)
    assert isinstance(result, core.StepResult)
    chex.assert_trees_all_equal_structs(result.grads, seed_params)
    chex.assert_trees_all_equal_shapes_and_dtypes(result.params, seed_params)
    chex.assert_trees_all_close(
        result.params, core.sgd_update(seed_params, result.grads, 0.1), rtol=ULP_RTOL
    )
    # loss_after comes from inside the jitted step, the oracle from an eager call: a
    # small loss is a difference of O(1) residuals, so allow a few ulp of those.
    np.testing.assert_allclose(
        result.loss_after, core.loss(result.params, x, y), rtol=ULP_RTOL, atol=1e-6
    )


def test_grads_cover_both_halves(seed_params):
    # Against the trap the seed warns about: default argnums gives only one half.
    x, y = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 0.0])
    g = core.grads(seed_params, x, y)
    only_first = jax.grad(lambda a, b: core.loss(core.HybridParams(a, b), x, y))(
        seed_params.nnx, seed_params.linen
    )
    chex.assert_trees_all_close(g.nnx, only_first, rtol=ULP_RTOL)
    assert any(float(jnp.abs(leaf).max()) > 0 for leaf in jax.tree.leaves(g.linen))


def test_core_compiles_once_for_same_shapes():
    x, y = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 0.0])
    hc.mixed_train_step(0, x, y, 0.1)  # warm: the one compilation for these shapes
    with count_compiles() as compiled:
        for seed, lr in [(1, 0.1), (2, 0.05), (99, 0.3), (12345, 1e-3)]:
            hc.mixed_train_step(seed, x + seed, y, lr)
    assert compiled["_seed_step"] == 0, compiled.by_name

    params = hc.init_params(0, 3, 2)
    hc.train_step(params, x, y, 0.1)
    with count_compiles() as compiled:
        for seed, lr in [(1, 0.2), (3, 0.01)]:
            hc.train_step(hc.init_params(seed, 3, 2), x, y, lr)
    assert compiled["train_step"] == 0, compiled.by_name
    assert compiled["_init"] == 0, compiled.by_name


def test_new_shapes_compile_once_each():
    with count_compiles() as compiled:
        for _ in range(3):
            hc.mixed_train_step(0, jnp.ones(6), jnp.ones(5), 0.1)
    assert compiled["_seed_step"] == 1, compiled.by_name


def test_inputs_are_not_mutated(seed_params):
    before = jax.tree.map(np.array, seed_params)
    x, y = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 0.0])
    hc.train_step(seed_params, x, y, 0.5)
    chex.assert_trees_all_equal(seed_params, before)


# --- bad input: every case raises the documented error, naming the argument -------

GOOD_X, GOOD_Y = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.0])

BAD_INPUTS = [
    # (id, kwargs override, error type, message regex)
    ("x-3d", {"x": np.ones((2, 2, 3))}, ValueError, r"x must be 1-D .* 3-D"),
    ("x-0d", {"x": np.float32(1.0)}, ValueError, r"x must be 1-D .* 0-D"),
    ("y-3d", {"y": np.ones((1, 1, 2))}, ValueError, r"y must be 1-D"),
    ("x-empty", {"x": np.ones((0,))}, ValueError, r"x must not be empty"),
    (
        "y-empty-batch",
        {"x": np.ones((0, 3)), "y": np.ones((0, 2))},
        ValueError,
        r"x must not be empty",
    ),
    (
        "batch-mismatch",
        {"x": np.ones((4, 3)), "y": np.ones((5, 2))},
        ValueError,
        r"same batch size.*\(4, 3\).*\(5, 2\)",
    ),
    (
        "ndim-mismatch",
        {"x": np.ones((4, 3))},
        ValueError,
        r"both be 1-D .* or both 2-D",
    ),
    (
        "x-nan",
        {"x": np.array([1.0, np.nan, 0.0])},
        ValueError,
        r"x must be finite.*index \(1,\)",
    ),
    ("y-inf", {"y": np.array([np.inf, 0.0])}, ValueError, r"y must be finite"),
    ("x-bool", {"x": np.array([True, False, True])}, TypeError, r"x .*dtype bool"),
    ("y-complex", {"y": np.array([1j, 0.0])}, TypeError, r"y must be a real array"),
    ("x-str", {"x": "abc"}, TypeError, r"x must be a numeric array"),
    (
        "x-str-array",
        {"x": np.array(["a", "b"])},
        TypeError,
        r"x must be a real numeric",
    ),
    ("lr-zero", {"lr": 0.0}, ValueError, r"lr must be a finite number > 0"),
    ("lr-negative", {"lr": -0.1}, ValueError, r"lr must be a finite number > 0"),
    ("lr-nan", {"lr": float("nan")}, ValueError, r"lr must be a finite"),
    ("lr-inf", {"lr": float("inf")}, ValueError, r"lr must be a finite"),
    ("lr-str", {"lr": "0.1"}, TypeError, r"lr must be a real number"),
    ("lr-bool", {"lr": True}, TypeError, r"lr must be a real number"),
    ("lr-array", {"lr": np.array([0.1, 0.2])}, TypeError, r"lr must be a scalar"),
    ("seed-fractional", {"seed": 1.5}, ValueError, r"seed must be an integral value"),
    ("seed-negative", {"seed": -1}, ValueError, r"seed must be in \[0, 2147483646\]"),
    ("seed-too-big", {"seed": 2**31}, ValueError, r"seed must be in \[0, "),
    ("seed-huge", {"seed": 2**80}, ValueError, r"seed must be in \[0, "),
    ("seed-nan", {"seed": float("nan")}, ValueError, r"seed must be a finite"),
    ("seed-str", {"seed": "3"}, TypeError, r"seed must be an integral number"),
    ("seed-bool", {"seed": False}, TypeError, r"seed must be an integral number"),
]


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_raises_clear_error(override, error, match):
    kwargs = {"seed": 0.0, "x": GOOD_X, "y": GOOD_Y, "lr": 0.1, **override}
    with count_compiles() as compiled, pytest.raises(error, match=match):
        hc.mixed_train_step(**kwargs)
    # Nothing half-computed: validation fails before anything is traced or compiled.
    assert compiled["_seed_step"] == 0


def test_tracer_input_is_rejected_with_a_pointer_to_train_step():
    with pytest.raises(TypeError, match="jit hybridcheck.train_step"):
        jax.jit(lambda x: hc.mixed_train_step(0, x, GOOD_Y, 0.1))(GOOD_X)
