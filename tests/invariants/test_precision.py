"""The precision a float64 replay actually ran in, read from its jaxpr, and the
invariants that judge in it (finite differences, first order, the jit probes)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcheck import compat
from hybridcheck.invariants import (
    InvariantNotApplicable,
    assert_grads_match_finite_differences,
    assert_loss_decrease_first_order,
    error_regex,
)
from hybridcheck.invariants._precision import (
    FLOAT64,
    Precision,
    precision_note,
    replay_precision,
    rounding_noise,
)

if compat.FLAX_VERSION < (0, 12, 0):  # written against today's nnx layer API
    pytest.skip("needs Flax >= 0.12 (nnx layers with dtype=)", allow_module_level=True)

from flax import nnx  # noqa: E402

X = np.linspace(-1.0, 1.0, 6).reshape(2, 3)  # float64 under enable_x64


def _linear(dtype, param_dtype=jnp.float32):
    layer = nnx.Linear(3, 2, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    return lambda x: jnp.sum(layer(x) ** 2)


@pytest.mark.parametrize(
    ("fn", "name"),
    [
        (lambda x: jnp.sum(jnp.tanh(x) ** 2), "float64"),
        (_linear(None), "float64"),  # no dtype: computes in its inputs' float64
        (_linear(jnp.float32), "float32"),  # Flax's examples: dtype=jnp.float32
        (_linear(jnp.bfloat16), "bfloat16"),
        (lambda x: jnp.sum(x.astype(jnp.float16).astype(jnp.float64)), "float16"),
        (
            lambda x: jnp.sum(jax.lax.reduce_precision(x, 8, 7)),
            "reduce_precision(mantissa=7)",
        ),
    ],
    ids=["plain", "dtype-None", "dtype-f32", "dtype-bf16", "cast-f16", "reduce"],
)
def test_replay_precision_reads_what_ran(fn, name):
    with compat.enable_x64():
        precision = replay_precision(fn, X)
    assert precision.name == name
    assert precision.full == (name == "float64")
    if name == "float32":
        assert "dot_general" in precision.ops
        assert "float32" in precision.describe()
        assert "dtype=" in precision.describe()


def test_values_not_computed_from_floating_inputs_do_not_count():
    def masked(x):  # a boolean mask cast to float32 carries no rounding of x
        return jnp.sum((x > 0).astype(jnp.float32) * x)

    def onehot(x):
        return jnp.sum(jax.nn.one_hot(jnp.arange(2), 3, dtype=jnp.float32) * x)

    with compat.enable_x64():
        assert replay_precision(masked, X) == FLOAT64
        assert replay_precision(onehot, X) == FLOAT64


def test_precision_is_read_inside_scan_custom_vjp_and_jit():
    @jax.custom_vjp
    def f32_square(x):
        return (x.astype(jnp.float32) ** 2).astype(x.dtype)

    f32_square.defvjp(lambda x: (f32_square(x), x), lambda x, ct: (2 * x * ct,))

    def scanned(x):
        def body(c, row):
            return c + row.astype(jnp.bfloat16).astype(x.dtype), None

        return jnp.sum(jax.lax.scan(body, jnp.zeros(3, x.dtype), x)[0])

    with compat.enable_x64():
        assert replay_precision(lambda x: jnp.sum(f32_square(x)), X).name == "float32"
        assert replay_precision(scanned, X).name == "bfloat16"
        assert replay_precision(jax.jit(_linear(jnp.float32)), X).name == "float32"


def test_rounding_noise_is_at_least_one_rounding_step_of_the_value():
    f32 = Precision("float32", float(np.finfo(np.float32).eps))
    with compat.enable_x64():
        noise = rounding_noise(_linear(jnp.float32), X, f32)
        value = float(_linear(jnp.float32)(X))
    assert f32.eps * value <= noise < 1e3 * f32.eps * value


def test_precision_note_only_below_the_floor():
    f32 = Precision("float32", float(np.finfo(np.float32).eps), ("dot_general",))
    assert precision_note([FLOAT64, FLOAT64]) is None
    note = precision_note([FLOAT64, f32])
    assert note is not None
    assert note.startswith("judged in float32 on 1 of 2 examples")
    assert precision_note([f32], floor=f32.eps) is None


class Tower(nnx.Module):
    """Two float32-declared layers and a ReLU: what Flax's examples write."""

    def __init__(self, dtype):
        self.a = nnx.Linear(3, 8, dtype=dtype, rngs=nnx.Rngs(1))
        self.b = nnx.Linear(8, 1, dtype=dtype, rngs=nnx.Rngs(2))

    def __call__(self, x):
        return self.b(nnx.relu(self.a(x)))


@jax.custom_vjp
def _half_grad(x):
    return x


_half_grad.defvjp(lambda x: (x, None), lambda _, ct: (0.5 * ct,))  # BUG: halves it


def _tower_loss(dtype, wrong_vjp=False, offset=0.0):
    tower = Tower(dtype)
    (graph_a, a), (graph_b, b) = nnx.split(tower.a), nnx.split(tower.b)

    def loss(params, x):
        hidden = nnx.relu(nnx.merge(graph_a, params["a"])(x))
        out = nnx.merge(graph_b, params["b"])(hidden)
        # offset: a large loss value (a sum over a large batch) in the layers' dtype
        return jnp.mean((_half_grad(out) if wrong_vjp else out) ** 2) + offset

    return loss, {"a": a, "b": b}


@pytest.mark.parametrize("images", ["zeros", "random"])
def test_finite_differences_of_a_float32_declared_model_hold(images):
    # Before: judged by float64 tolerances, the float32 rounding of the loss (ulp
    # 6e-5 at 1e3) over eps failed this correct model at every step, blaming "a
    # custom_vjp with a bug".
    loss, params = _tower_loss(jnp.float32, offset=jnp.float32(1e3))
    x = np.zeros((4, 3)) if images == "zeros" else np.linspace(-2, 2, 12)
    with compat.enable_x64():
        p64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64).reshape(4, 3)
        assert replay_precision(loss, p64, x64).name == "float32"
        outcome = "held"
        try:
            assert_grads_match_finite_differences(loss, p64, (x64,))
        except InvariantNotApplicable as exc:  # allowed: never a failure
            outcome = str(exc)
    assert outcome == "held" or "judged in float32" in outcome, outcome


def test_finite_differences_still_catch_a_wrong_vjp_in_float32():
    loss, params = _tower_loss(jnp.float32, wrong_vjp=True)
    with compat.enable_x64():
        p64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), params)
        x64 = jnp.asarray(np.linspace(-2, 2, 12), jnp.float64).reshape(4, 3)
        with pytest.raises(
            AssertionError,
            match=error_regex(
                "grads_match_finite_differences", "judged in float32", "noise"
            ),
        ):
            assert_grads_match_finite_differences(loss, p64, (x64,))


def test_first_order_skips_the_rates_that_rounding_drowns():
    bf16 = Precision("bfloat16", float(jnp.finfo(jnp.bfloat16).eps), ("dot_general",))

    def exact(lr):  # L(lr) = 1 - lr * |g|^2 with |g|^2 = 2, plus bf16-sized noise
        return 1.0 - 2.0 * lr + (0.004 if lr else 0.0)

    with pytest.raises(InvariantNotApplicable, match="drowns the first-order"):
        assert_loss_decrease_first_order(exact, 2.0, noise=0.004, precision=bf16)
    # the same noise allowance never excuses a step of size lr**2 at resolvable lr
    with pytest.raises(AssertionError, match="judged in bfloat16"):
        assert_loss_decrease_first_order(
            lambda lr: 1.0 - 2.0 * lr * lr,
            2.0,
            lrs=(0.5, 0.25),
            noise=0.004,
            precision=bf16,
        )
    assert_loss_decrease_first_order(
        lambda lr: 1.0 - 2.0 * lr + (0.004 if lr else 0.0),
        2.0,
        lrs=(0.5,),
        noise=0.004,
        precision=bf16,
    )
