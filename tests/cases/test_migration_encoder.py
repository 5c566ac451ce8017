"""The encoder migrations (Linen ``nn.scan`` over layers -> NNX layers in a list, and
-> NNX layers stacked by ``nnx.vmap`` under ``nnx.scan``): their layouts, their
converters, and which rewrites of the heads are the same function.

That the exact pair holds every migration invariant and each of its mutants fails
the invariant it names is tested with every built-in migration
(tests/invariants/test_migration.py, over ``migrations.cases()`` / ``mutants()``);
here only what is particular to this pair, without running the verifier.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcheck import compat
from hybridcheck.cases import migrations
from hybridcheck.cases.migrations import encoder as enc
from hybridcheck.cases.migrations import encoder_scan

KEY = jax.random.PRNGKey(0)


def shapes(tree: Any) -> Any:
    return jax.tree_util.tree_map(jnp.shape, tree)


def n_params(tree: Any) -> int:
    return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(tree))


@pytest.fixture(scope="module")
def before() -> Any:
    return enc.LINEN_ENCODER.init(KEY)


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    x = rs.uniform(-1.0, 1.0, (4, enc.T, enc.D))
    return x, rs.randint(0, enc.C, 4).astype(np.int32)


def losses64(before: Any, case: Any = None, **convert: Any) -> tuple[float, float]:
    """Both sides' float64 loss on the same batch, the after side on weights
    converted by ``case`` (default: the list rewrite, with ``convert`` keywords)."""
    if case is None:
        case = enc.encoder_migration("x")
        case = dataclasses.replace(
            case, convert=lambda p: enc.encoder_to_nnx(p, **convert)
        )
    with compat.enable_x64():
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), before)
        x, y = batch()
        b = (jnp.asarray(x, jnp.float64), y)
        want = case.before.loss(p, b)
        got = case.after.loss(case.convert(p), b)
    return float(want), float(got)


def test_registered_as_built_in_migrations_with_their_mutants():
    cases = [c for c in migrations.cases() if c.name.startswith("migrate-encoder")]
    assert [c.name for c in cases] == [
        "migrate-encoder:scan->list",
        *(["migrate-encoder:scan->nnx-scan"] if compat.HAS_NNX_SCAN else []),
    ]
    assert all(c.invert is not None for c in cases)
    names = {m.name for m in migrations.mutants()}
    assert {m.name for m in enc.encoder_mutants()} <= names


def test_linen_scan_stacks_every_block_param_on_a_leading_layer_axis(before):
    layers = before["linen"]["params"]["layers"]
    assert all(np.shape(a)[0] == enc.L for a in jax.tree_util.tree_leaves(layers))
    attn = shapes(layers["attn"])
    heads, head_dim = enc.HEADS, enc.D // enc.HEADS
    assert attn["query"]["kernel"] == (enc.L, enc.D, heads, head_dim)
    assert attn["out"]["kernel"] == (enc.L, heads, head_dim, enc.D)


def test_both_sides_have_the_same_params_once_the_scan_axis_is_unstacked(before):
    after = enc.nnx_encoder(enc.EncoderVariant()).init(KEY)
    assert len(after["nnx"]["layers"]) == enc.L
    assert n_params(after) == n_params(before) < 10_000
    # the converter's output has the NNX model's exact layout
    assert shapes(enc.encoder_to_nnx(before)) == shapes(after)


def test_layer_i_is_slice_i_of_the_scan_axis_in_the_same_kernel_layout(before):
    out = enc.encoder_to_nnx(before)["nnx"]["layers"]
    stacked = before["linen"]["params"]["layers"]
    for i in range(enc.L):
        for path, leaf in jax.tree_util.tree_leaves_with_path(stacked):
            got = out[i]
            for k in path:
                got = got[k.key]
            np.testing.assert_array_equal(got, leaf[i], err_msg=str(path))


def test_converter_keeps_float64_and_round_trips_bitwise(before):
    with compat.enable_x64():
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), before)
        out = enc.encoder_to_nnx(p64)
        assert {a.dtype for a in jax.tree_util.tree_leaves(out)} == {
            np.dtype(np.float64)
        }
        back = enc.nnx_to_encoder(out)
    chex.assert_trees_all_equal(back, p64)  # the structure too


@pytest.mark.parametrize(
    ("convert", "same"),
    [
        ({}, True),
        ({"reverse_heads": enc.PROJECTIONS}, True),  # heads are interchangeable
        ({"reverse_heads": ("out",)}, False),  # out no longer pairs with value
        ({"reverse_layers": True}, False),
    ],
    ids=["exact", "all-heads-permuted", "out-heads-reversed", "layers-reversed"],
)
def test_heads_permuted_everywhere_are_the_same_function(before, convert, same):
    want, got = losses64(before, **convert)
    if same:  # the same float64 math, another summation order at most
        assert got == pytest.approx(want, rel=1e-12)
    else:
        assert abs(got - want) > 1e-3 * abs(want)


def test_nnx_attention_default_agrees_to_float32_rounding(before):
    # nnx.MultiHeadAttention's own attention_fn: from Flax 0.11 the fused
    # jax.nn.dot_product_attention, whose softmax runs in float32 under x64.
    fused = dataclasses.replace(
        enc.encoder_migration("x"),
        after=enc.nnx_encoder(enc.EncoderVariant(fused=True)),
    )
    want, got = losses64(before, fused)
    assert got == pytest.approx(want, rel=1e-6)


needs_nnx_scan = pytest.mark.skipif(
    not compat.HAS_NNX_SCAN, reason="nnx.split_rngs / nnx.Carry: Flax 0.11+"
)


@needs_nnx_scan
def test_nnx_scan_keeps_the_layer_axis_and_the_converter_only_renames(before):
    case = encoder_scan.encoder_scan_migration("x")
    after = case.after.init(KEY)
    assert shapes(after["nnx"]) == shapes(before["linen"]["params"])
    out = case.convert(before)
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, out["nnx"], before["linen"]["params"]
    )
    assert case.invert is not None
    chex.assert_trees_all_equal(case.invert(out), before)


@needs_nnx_scan
def test_nnx_scan_computes_the_linen_scan(before):
    want, got = losses64(before, encoder_scan.encoder_scan_migration("x"))
    assert got == pytest.approx(want, rel=1e-12)
