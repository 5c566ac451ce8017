"""A migration whose converter is written the way users write one: the Linen
variables dict in, the NNX model's state (pure dict or ``nnx.State``) out, with no
glue for halves, ``{'value': ...}`` wrappers, the optimizer's moments or counters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax.training import train_state
from hypothesis import strategies as st

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.describe import strategies as hst
from hybridcheck.describe.subject import to64
from hybridcheck.report.results import FAILED, HELD
from tests.cases.test_migration_real import nnx_loss, nnx_step

pytestmark = pytest.mark.skipif(not compat.HAS_BRIDGE, reason="needs Flax 0.9+")

COMPARISONS = [
    "loss_matches_before",
    "grads_match_before",
    "step_matches_before",
    "trajectory_matches_before",
    "roundtrip",
]
IN, HIDDEN, OUT = 3, 5, 2


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x: Any, train: bool = True) -> Any:
        h = nn.Dense(HIDDEN)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        return nn.Dense(OUT)(jax.nn.relu(h))


class TrainState(train_state.TrainState):
    batch_stats: Any


def linen_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    x, y = batch
    out, updates = LinenNet().apply(variables, x, mutable=["batch_stats"])
    return jnp.mean((out - y) ** 2), updates


def linen_step(state: Any, batch: Any) -> Any:
    def loss_of(params: Any) -> Any:
        return linen_loss(
            {"params": params, "batch_stats": state.batch_stats}, batch, None
        )

    (_, updates), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])


def _nnx_net() -> Any:
    nnx = compat.nnx

    class NNXNet(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.dense = nnx.Linear(IN, HIDDEN, rngs=rngs)
            self.bn = nnx.BatchNorm(HIDDEN, momentum=0.9, rngs=rngs)
            self.head = nnx.Linear(HIDDEN, OUT, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            return self.head(jax.nn.relu(self.bn(self.dense(x))))

    return NNXNet


BATCHES = st.tuples(
    hst.bounded_arrays((6, IN), max_magnitude=2.0),
    hst.bounded_arrays((6, OUT), max_magnitude=2.0),
)


# -- the user's converters, as written in a migration PR ---------------------------


def linen_to_nnx(variables: Any) -> Any:
    p, s = variables["params"], variables["batch_stats"]
    return {
        "dense": dict(p["Dense_0"]),
        "bn": {**p["BatchNorm_0"], **s["BatchNorm_0"]},
        "head": dict(p["Dense_1"]),
    }


def nnx_to_linen(state: Any) -> Any:
    bn = state["bn"]
    return {
        "params": {
            "Dense_0": dict(state["dense"]),
            "BatchNorm_0": {"scale": bn["scale"], "bias": bn["bias"]},
            "Dense_1": dict(state["head"]),
        },
        "batch_stats": {"BatchNorm_0": {"mean": bn["mean"], "var": bn["var"]}},
    }


def as_nnx_state(variables: Any) -> Any:
    """The converter returning an ``nnx.State`` (Variables as leaves)."""
    nnx = compat.nnx
    model = nnx.eval_shape(lambda: _nnx_net()(nnx.Rngs(0)))
    state = nnx.state(model)
    pure = linen_to_nnx(variables)
    compat.replace_params(state, pure)
    return state


def migration(convert: Any = linen_to_nnx, invert: Any = nnx_to_linen) -> Any:
    before = hc.from_linen(
        "linen-bn",
        module=LinenNet(),
        loss_fn=linen_loss,
        train_step=linen_step,
        tx=optax.adam,
        train_state=TrainState,
        init_args=(jnp.zeros((1, IN)),),
        batches=BATCHES,
    )
    after = hc.from_nnx(
        "nnx-bn",
        model_fn=_nnx_net(),
        loss_fn=nnx_loss,
        train_step=nnx_step,
        tx=optax.adam,
        batches=BATCHES,
    )
    return hc.MigrationCase(
        "linen-bn -> nnx-bn", before=before, after=after, convert=convert, invert=invert
    )


def _results(case: Any) -> dict[str, Any]:
    report = hc.verify(case, profile="dev", invariants=COMPARISONS, shrink_seconds=0)
    assert not report.cases[0].error, report.cases[0].error
    return {r.invariant: r for r in report.cases[0].results}


def test_a_converter_in_the_models_terms_needs_no_glue():
    results = _results(migration())
    assert all(r.status == HELD for r in results.values()), {
        k: (r.status, r.message) for k, r in results.items()
    }


def test_the_optimizer_state_follows_the_users_converter():
    m = migration()
    params = m.before.init(jax.random.PRNGKey(3))
    # an Adam state a few steps in: moments that differ from leaf to leaf
    for _ in range(2):
        params = m.before.step(params, (np.ones((6, IN)), np.ones((6, OUT))), 0.1)
    ms = m.subject(params)
    after = ms.convert(params)
    before_opt, after_opt = params["opt"], after["opt"]
    mu = before_opt["opt_state"]["0"]["mu"]
    got = after_opt["opt_state"]["0"]["mu"]
    np.testing.assert_array_equal(
        got["dense"]["kernel"]["value"], mu["Dense_0"]["kernel"]
    )
    np.testing.assert_array_equal(
        got["bn"]["scale"]["value"], mu["BatchNorm_0"]["scale"]
    )
    assert (
        after_opt["step"]["value"].dtype
        == m.after.init(jax.random.PRNGKey(0))["opt"]["step"]["value"].dtype
    )
    assert int(after_opt["step"]["value"]) == int(before_opt["step"]) == 2
    # and back: the inverse in the models' terms restores the before params bitwise
    back = ms.invert(after)
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree_util.tree_leaves_with_path(back),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b, err_msg=str(path))


def test_a_converter_returning_an_nnx_state_is_laid_out_too():
    results = _results(migration(convert=as_nnx_state))
    assert results["loss_matches_before"].status == HELD


def test_a_semantic_bug_in_a_terms_converter_still_fails():
    def swapped(variables: Any) -> Any:
        out = linen_to_nnx(variables)
        bn = out["bn"]
        out["bn"] = {**bn, "mean": bn["var"], "var": bn["mean"]}  # BUG: stats swapped
        return out

    results = _results(migration(convert=swapped, invert=None))
    # the training forward normalises by the batch's own statistics: the loss
    # agrees, the running statistics the step leaves do not
    assert results["loss_matches_before"].status == HELD
    assert results["step_matches_before"].status == FAILED


def test_a_converter_that_fits_neither_form_says_how_to_write_either():
    def forgets_stats(variables: Any) -> Any:
        p = variables["params"]
        return {
            "dense": dict(p["Dense_0"]),
            "bn": dict(p["BatchNorm_0"]),
            "head": dict(p["Dense_1"]),
        }

    report = hc.verify(migration(convert=forgets_stats), profile="dev")
    error = report.cases[0].error or ""
    assert "convert raised on the before model's params: KeyError" in error
    assert "missing ['bn/mean', 'bn/var']" in error
    assert "the Linen model's variables dict in" in error


def test_a_converter_that_casts_to_float32_is_judged_without_its_rounding():
    def to_float32(variables: Any) -> Any:  # a checkpoint script's numpy cast
        return jax.tree.map(
            lambda x: np.asarray(x, np.float32), linen_to_nnx(variables)
        )

    results = _results(migration(convert=to_float32, invert=None))
    for name in (
        "loss_matches_before",
        "step_matches_before",
        "trajectory_matches_before",
    ):
        assert results[name].status == HELD, (name, results[name].message)


def test_convert64_of_a_float32_casting_converter_keeps_float64_bits():
    def to_float32(variables: Any) -> Any:
        return jax.tree.map(
            lambda x: np.asarray(x, np.float32), linen_to_nnx(variables)
        )

    exact, casting = migration(invert=None), migration(convert=to_float32, invert=None)
    params = exact.before.init(jax.random.PRNGKey(1))
    with compat.enable_x64():
        # params with bits float32 cannot hold (a float64 step's result)
        p64 = jax.tree.map(
            lambda x: x * (1 + 1e-9) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            _to64(params),
        )
        want = exact.subject(params).convert64(p64)
        got = casting.subject(params).convert64(p64)
        rounded = _to64(casting.subject(params).convert(p64))
        want, got, rounded = jax.device_get((want, got, rounded))
    for (path, w), (_, g), (_, r) in zip(
        jax.tree_util.tree_leaves_with_path(want),
        jax.tree_util.tree_leaves_with_path(got),
        jax.tree_util.tree_leaves_with_path(rounded),
        strict=True,
    ):
        assert g.dtype == w.dtype, path
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=0, err_msg=str(path))
        if np.issubdtype(w.dtype, np.floating) and np.any(w != 0):
            # the plain cast loses what the split keeps
            assert not np.array_equal(r, w), path


def _to64(tree: Any) -> Any:
    return to64(tree)
