"""The compat layer, run under every (jax, flax) pair the matrix installs."""

from __future__ import annotations

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.seed import MAX_SEED


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.12.8", (0, 12, 8)), ("0.10.0rc1", (0, 10, 0)), ("0.4.35.dev2", (0, 4, 35))],
)
def test_version_tuple(text, expected):
    assert compat.version_tuple(text) == expected


def test_version_tuple_rejects_garbage():
    with pytest.raises(ValueError, match="version must start with a dotted number"):
        compat.version_tuple("dev")


def test_variable_array_reads_without_deprecation_warning():
    linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        kernel = compat.variable_array(linear.kernel)
    assert isinstance(kernel, jax.Array)
    chex.assert_shape(kernel, (3, 4))
    plain = jnp.ones(2)
    assert compat.variable_array(plain) is plain


def test_rngs_from_seed_matches_int_rngs():
    for seed in (0, 5, MAX_SEED):
        a = nnx.Linear(3, 4, rngs=nnx.Rngs(seed))
        b = jax.jit(
            lambda s: compat.params_as_dict(
                nnx.Linear(3, 4, rngs=compat.rngs_from_seed(s))
            )
        )(jnp.int32(seed))
        chex.assert_trees_all_equal(compat.params_as_dict(a), b)


def test_params_as_dict_roundtrip_through_module_with_params():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(1))
    params = compat.params_as_dict(model)
    assert set(params) == {"kernel", "bias"}
    assert all(type(v) is not dict for v in params.values())
    doubled = jax.tree.map(lambda p: 2 * p + 1, params)
    new_model = compat.module_with_params(model, doubled)
    chex.assert_trees_all_equal(compat.params_as_dict(new_model), doubled)
    # The original is untouched.
    chex.assert_trees_all_equal(compat.params_as_dict(model), params)
    x = jnp.ones((3,))
    np.testing.assert_allclose(
        new_model(x), x @ doubled["kernel"] + doubled["bias"], rtol=1e-6
    )


def test_params_as_dict_nested_module():
    class Two(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(2, 3, rngs=rngs)
            self.b = nnx.Linear(3, 1, rngs=rngs)

    params = compat.params_as_dict(Two(nnx.Rngs(0)))
    assert jax.tree.map(jnp.shape, params) == {
        "a": {"kernel": (2, 3), "bias": (3,)},
        "b": {"kernel": (3, 1), "bias": (1,)},
    }


def test_module_list_holds_layers_under_integer_keys():
    class Stack(nnx.Module):
        def __init__(self, rngs):
            self.layers = compat.module_list(nnx.Linear(2, 2, rngs=rngs) for _ in "ab")

    model = Stack(nnx.Rngs(0))
    params = compat.params_as_dict(model)
    assert sorted(params["layers"]) == [0, 1]
    doubled = jax.tree.map(lambda p: 2 * p, params)
    rebuilt = compat.module_with_params(model, doubled)
    chex.assert_trees_all_equal(compat.params_as_dict(rebuilt), doubled)
    assert [type(m) for m in rebuilt.layers] == [nnx.Linear, nnx.Linear]


def test_params_as_dict_rejects_linen_module():
    from flax import linen as nn

    with pytest.raises(TypeError, match="module must be an nnx.Module"):
        compat.params_as_dict(nn.Dense(3))


def test_replace_params_rejects_unknown_key():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="'oops'"):
        compat.module_with_params(model, {"oops": jnp.ones(2)})


def test_linen_trainable_requires_params_collection():
    with pytest.raises(ValueError, match="must have a 'params' collection"):
        compat.linen_trainable({"batch_stats": {}})


def test_feature_support_reports_bridge():
    support = compat.feature_support()
    if compat.FLAX_VERSION >= (0, 9, 0):
        assert support["bridge"] is None
    else:
        assert "0.9.0" in str(support["bridge"])


def test_real_model_cases_say_which_flax_they_need(monkeypatch):
    support = compat.feature_support()
    assert (support["real_models"] is None) == compat.HAS_BRIDGE
    reason = "hc.from_nnx / hc.from_linen need Flax 0.9.0 or newer (test)"
    monkeypatch.setattr(
        compat, "feature_support", lambda: {**support, "real_models": reason}
    )
    import optax

    import hybridcheck as hc

    with pytest.raises(RuntimeError, match=r"\[old\] hc.from_nnx / hc.from_linen"):
        hc.from_nnx(
            "old",
            model_fn=lambda rngs: None,
            loss_fn=lambda m, b: 0.0,
            train_step=lambda m, o, b: None,
            tx=optax.sgd,
            batches=lambda key: None,
        )


@pytest.mark.skipif(not compat.HAS_BRIDGE, reason="flax.nnx.bridge needs Flax 0.9.0+")
def test_bridge_lazy_init_creates_the_wrapped_params():
    from flax import linen as nn
    from flax.nnx import bridge

    dense = nn.Dense(3)
    wrapper = bridge.ToNNX(dense, rngs=nnx.Rngs(0))
    compat.bridge_lazy_init(wrapper, jnp.ones((1, 2)))
    params = compat.params_as_dict(wrapper)
    # The nesting moved between releases (flat on 0.12, under 'params' before:
    # FAILURE-MODES #10); the leaves themselves did not.
    leaves = {
        jax.tree_util.keystr(path[-1:]): leaf.shape
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    assert leaves == {"['kernel']": (2, 3), "['bias']": (3,)}


def test_make_optimizer_and_update_take_one_sgd_step():
    optax = pytest.importorskip("optax")
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    before = compat.params_as_dict(model)
    optimizer = compat.make_optimizer(model, optax.sgd(0.5))
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((2,)))))(model)
    compat.optimizer_update(optimizer, model, grads)
    after = compat.params_as_dict(model)
    chex.assert_trees_all_close(
        after, jax.tree.map(lambda p: p - 0.5 * jnp.ones_like(p), before), rtol=1e-6
    )


def test_nnx_sharding_key_follows_the_release():
    # Measured from the wheels: 'sharding' up to 0.11.1, 'sharding_names' in
    # 0.11.2-0.12.3, 'out_sharding' from 0.12.4.
    if compat.FLAX_VERSION >= (0, 12, 4):
        assert compat.NNX_SHARDING_KEY == "out_sharding"
    elif compat.FLAX_VERSION >= (0, 11, 2):
        assert compat.NNX_SHARDING_KEY == "sharding_names"
    else:
        assert compat.NNX_SHARDING_KEY == "sharding"


def test_partitioning_is_read_from_nnx_metadata_without_a_mesh_or_warning():
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with compat.unsharded_variables():
            linear = nnx.Linear(3, 4, kernel_init=init, rngs=nnx.Rngs(0))
        assert compat.nnx_sharding_names(linear.kernel) == (None, "model")
        assert compat.nnx_sharding_names(linear.bias) is None
        specs = compat.nnx_partition_specs(linear)
    assert specs == {
        "kernel": jax.sharding.PartitionSpec(None, "model"),
        "bias": jax.sharding.PartitionSpec(),
    }
    with pytest.raises(TypeError, match="module must be an nnx.Module"):
        compat.nnx_partition_specs({"kernel": 1})


def test_partitioning_is_read_from_linen_boxes():
    from flax import linen as nn

    dense = nn.Dense(
        4, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), ("a", "b"))
    )
    variables = jax.eval_shape(
        lambda: dense.init(jax.random.PRNGKey(0), jnp.ones((1, 3)))
    )
    specs = compat.linen_partition_specs(variables)
    assert specs["params"]["kernel"] == jax.sharding.PartitionSpec("a", "b")
    assert specs["params"]["bias"] == jax.sharding.PartitionSpec()


def test_sharding_support_names_a_missing_api(monkeypatch):
    assert compat.sharding_support() is None
    monkeypatch.delattr(nnx, "with_partitioning")
    assert "with_partitioning" in (compat.sharding_support() or "")


@pytest.mark.skipif(not compat.HAS_BRIDGE, reason="flax.nnx.bridge needs Flax 0.9.0+")
def test_module_with_params_holding_to_nnx_works_under_grad_and_jit():
    # The README's functional example with a Linen part kept in bridge.ToNNX: every
    # ToNNX / Dropout call advances an RngCount, which must not be the template's
    # (TraceContextError under jax.grad on Flax >= 0.11).
    from flax import linen as nn
    from flax.nnx import bridge

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.encoder = nnx.Linear(4, 8, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.head = bridge.ToNNX(nn.Dense(3), rngs=rngs)

        def __call__(self, x):
            return self.head(self.drop(jax.nn.gelu(self.encoder(x))))

    template = compat.bridge_lazy_init(Model(nnx.Rngs(0)), jnp.ones((1, 4)))
    params = compat.params_as_dict(template)
    counts_before = jax.tree.leaves(nnx.state(template, nnx.RngCount))

    def loss(p, x):
        return jnp.sum(compat.module_with_params(template, p)(x) ** 2)

    x = jnp.linspace(-1, 1, 8).reshape(2, 4)
    eager = jax.grad(loss)(params, x)
    jitted = jax.jit(jax.grad(loss))(params, x)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-6)
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(eager))
    # The template's RNG state is untouched: the same params give the same loss.
    chex.assert_trees_all_equal(
        jax.tree.leaves(nnx.state(template, nnx.RngCount)), counts_before
    )
    assert float(loss(params, x)) == float(loss(params, x))


def test_optimizer_tx_is_the_transformation_it_was_built_with():
    import optax

    tx = optax.adam(1e-3)
    optimizer = compat.make_optimizer(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), tx)
    assert compat.optimizer_tx(optimizer) is tx
