"""A real-model migration's partitioning, read from the models (no specs given)."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import linen as nn
from jax.sharding import PartitionSpec as P

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.cases.migrations._shared import D, mse, vector_batches
from hybridcheck.compat import nnx
from hybridcheck.invariants import error_regex
from hybridcheck.report.results import FAILED, HELD, NOT_APPLICABLE

HIDDEN = 8
RULES = (("mlp", "model"), ("embed", None))
LECUN = nn.initializers.lecun_normal()

# Real-model cases (from_linen / from_nnx) run on the Flax releases of the bridge era,
# as tests/flaxmodels/test_functionalize.py does (0.8.5 has no nnx.Optimizer module).
pytestmark = pytest.mark.skipif(not compat.HAS_BRIDGE, reason="needs Flax 0.9+")


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        part = nn.with_logical_partitioning
        h = nn.Dense(HIDDEN, kernel_init=part(LECUN, ("embed", "mlp")), name="fc1")(x)
        return nn.Dense(D, kernel_init=part(LECUN, ("mlp", "embed")), name="fc2")(
            nn.relu(h)
        )


Names = tuple[Any, ...] | None


def _init(names: Names) -> Any:
    return LECUN if names is None else nnx.with_partitioning(LECUN, names)


class NnxMLP(nnx.Module):
    def __init__(self, rngs: Any, fc1_names: Names, fc2_names: Names) -> None:
        self.fc1 = nnx.Linear(D, HIDDEN, kernel_init=_init(fc1_names), rngs=rngs)
        self.fc2 = nnx.Linear(HIDDEN, D, kernel_init=_init(fc2_names), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.fc2(nnx.relu(self.fc1(x)))


def linen_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    return mse(LinenMLP().apply(variables, batch[0]), batch[1])


def linen_step(state: Any, batch: Any) -> Any:
    grads = jax.grad(lambda p: linen_loss({"params": p}, batch, None))(state.params)
    return state.apply_gradients(grads=grads)


def nnx_loss(model: Any, batch: Any) -> Any:
    return mse(model(batch[0]), batch[1])


def nnx_step(model: Any, optimizer: Any, batch: Any) -> None:
    compat.optimizer_update(optimizer, model, nnx.grad(nnx_loss)(model, batch))


def linen_case(name: str = "linen-mlp", **overrides: Any) -> hc.HybridCase:
    return hc.from_linen(
        name,
        module=LinenMLP(),
        loss_fn=linen_loss,
        train_step=linen_step,
        tx=optax.sgd,
        init_args=(jnp.zeros((1, D)),),
        batches=vector_batches(),
        halves={"fc1": "params/fc1", "fc2": "params/fc2"},
        **overrides,
    )


def nnx_case(
    fc1_names: Names = ("embed", "mlp"), fc2_names: Names = ("mlp", "embed")
) -> hc.HybridCase:
    def model_fn(rngs: Any) -> NnxMLP:
        with compat.unsharded_variables():  # keep the metadata, place nothing
            return NnxMLP(rngs, fc1_names, fc2_names)

    return hc.from_nnx(
        "nnx-mlp",
        model_fn=model_fn,
        loss_fn=nnx_loss,
        train_step=nnx_step,
        tx=optax.sgd,
        batches=vector_batches(),
        halves={"fc1": "fc1", "fc2": "fc2"},
    )


def convert(p: Any) -> Any:
    return {
        "fc1": dict(p["fc1"]["params"]),
        "fc2": dict(p["fc2"]["params"]),
        "opt": {"step": {"value": jnp.asarray(p["opt"]["step"], jnp.uint32)}},
    }


def migration(after: hc.HybridCase, **fields: Any) -> hc.MigrationCase:
    return hc.MigrationCase(
        name="mlp: linen -> nnx",
        before=linen_case(),
        after=after,
        convert=convert,
        axis_rules=RULES,
        **fields,
    )


def sharding_result(case: hc.MigrationCase) -> Any:
    report = hc.verify(case, profile="dev", invariants=["sharding_matches_before"])
    (result,) = report.cases[0].results
    return result


def leaf_paths(tree: Any) -> list[Any]:
    flat = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda s: s is None or isinstance(s, P)
    )[0]
    return [keypath for keypath, _ in flat]


def test_partition_specs_have_the_structure_of_the_params():
    linen, after = linen_case(), nnx_case()
    assert linen.partition_specs is not None
    assert after.partition_specs is not None
    params = after.init(jax.random.PRNGKey(0))
    specs = after.partition_specs(params)
    assert leaf_paths(specs) == leaf_paths(params)
    assert specs["fc2"]["fc2"]["kernel"] == P("mlp", "embed")
    assert specs["fc1"]["fc1"]["bias"] is None  # no metadata: replicated
    assert specs["opt"]["step"]["value"] is None  # the optimizer's state
    before = linen.partition_specs(linen.init(jax.random.PRNGKey(0)))
    assert before["fc1"]["params"]["fc1"]["kernel"] == P("embed", "mlp")
    assert before["opt"]["step"] is None
    # A model without any partitioning declares none.
    assert nnx_case(fc1_names=None, fc2_names=None).partition_specs is None
    # A user's value wins; None switches it off.
    assert linen_case("off", partition_specs=None).partition_specs is None
    with pytest.raises(TypeError, match=r"partition_specs must be a function"):
        hc.HybridCase(
            name="x",
            init=lambda k: (1.0, 1.0),
            loss=lambda p, b: 0.0,
            batches=lambda k: 0,
            partition_specs=3,  # type: ignore[arg-type]
        )


def test_explicit_specs_win_and_sources_are_named():
    case = migration(nnx_case(), after_specs=lambda p: jax.tree.map(lambda _: None, p))
    subject = case.subject(case.init(jax.random.PRNGKey(0)))
    assert "before: read from the Linen model" in subject.specs_source
    assert "after: MigrationCase.after_specs" in subject.specs_source
    assert subject.after_specs is not None
    assert all(spec == P() for _, spec in subject.after_specs)
    read = migration(nnx_case()).subject(case.init(jax.random.PRNGKey(0)))
    assert dict(read.after_specs or [])["['fc2']['fc2']['kernel']"] == P("model", None)
    assert "after: read from the NNX model's Variable metadata" in read.specs_source


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 forced host devices")
def test_real_model_migration_reads_both_sides_partitioning():
    if compat.sharding_support() is not None:
        pytest.skip(compat.sharding_support() or "")
    result = sharding_result(migration(nnx_case()))
    assert result.status == HELD, result.message
    dropped = sharding_result(migration(nnx_case(fc2_names=None)))
    assert dropped.status == FAILED
    assert dropped.message is not None
    assert re.search(
        error_regex(
            "sharding_matches_before",
            "after leaf ['fc2']['fc2']['kernel']: partitioned",
            f"expected {P('model', None)}",
            "Specs: before: read from the Linen model",
        ),
        dropped.message,
    )


def test_unsupported_flax_is_not_applicable(monkeypatch):
    reason = "Flax 0.0 lacks with_partitioning: partitioning cannot be read"
    monkeypatch.setattr(compat, "sharding_support", lambda: reason)
    case = migration(nnx_case())
    assert case.before.partition_specs is None
    result = sharding_result(case)
    assert result.status == NOT_APPLICABLE
    assert reason in (result.message or "")


def test_bridged_submodules_specs_land_in_their_halves():
    from flax.nnx import bridge

    class Outer(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            dense = nn.Dense(
                HIDDEN, kernel_init=nn.with_partitioning(LECUN, (None, "x"))
            )
            self.enc = bridge.ToNNX(dense, rngs=rngs)
            self.head = nnx.Linear(HIDDEN, D, kernel_init=_init(("x", None)), rngs=rngs)

        def __call__(self, x: Any) -> Any:
            return self.head(self.enc(x))

    def model_fn(rngs: Any) -> Outer:
        with compat.unsharded_variables():
            model = Outer(rngs)
            compat.bridge_lazy_init(model, jnp.zeros((1, D)))
            return model

    nnx_outer = hc.from_nnx(
        "to-nnx",
        model_fn=model_fn,
        loss_fn=nnx_loss,
        train_step=nnx_step,
        tx=optax.sgd,
        batches=vector_batches(),
    )
    assert nnx_outer.partition_specs is not None
    specs = nnx_outer.partition_specs(nnx_outer.init(jax.random.PRNGKey(0)))
    assert specs["linen:enc"] == {"kernel": P(None, "x"), "bias": None}
    assert specs["nnx"]["head"] == {"kernel": P("x", None), "bias": None}
    assert set(jax.tree.leaves(specs["rng"], is_leaf=lambda s: s is None)) == {None}

    class LinenOuter(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            inner = bridge.to_linen(
                nnx.Linear, D, HIDDEN, kernel_init=_init((None, "x"))
            )
            return nn.Dense(D, kernel_init=nn.with_partitioning(LECUN, ("x", None)))(
                inner(x)
            )

    def loss(variables: Any, batch: Any, rngs: Any) -> Any:
        return mse(LinenOuter().apply(variables, batch[0]), batch[1])

    def step(state: Any, batch: Any) -> Any:
        grads = jax.grad(lambda p: loss({"params": p}, batch, None))(state.params)
        return state.apply_gradients(grads=grads)

    with compat.unsharded_variables():  # ToLinen creates the NNX Variables in init
        linen_outer = hc.from_linen(
            "to-linen",
            module=LinenOuter(),
            loss_fn=loss,
            train_step=step,
            tx=optax.sgd,
            init_args=(jnp.zeros((1, D)),),
            batches=vector_batches(),
        )
        params = linen_outer.init(jax.random.PRNGKey(0))
    assert linen_outer.partition_specs is not None
    specs = linen_outer.partition_specs(params)
    assert specs["nnx:ToLinen_0"]["params"]["kernel"] == P(None, "x")
    assert specs["linen"]["params"]["Dense_0"]["kernel"] == P("x", None)
