"""A transformer encoder: Linen layers stacked by ``nn.scan`` -> NNX layers in a list.

Before, each pre-norm block (LayerNorm, self-attention, residual; LayerNorm, Dense,
GELU, Dense, residual) is scanned over ``L`` layers as real Linen transformers do
(``variable_axes={'params': 0}``): every block parameter has a leading layer axis.
After, the blocks are ``nnx.MultiHeadAttention`` (given Linen's softmax attention as
``attention_fn``: see :func:`attention`) / ``nnx.LayerNorm`` / ``nnx.Linear`` modules
in a Python list. The converter unstacks the layer axis into the list; the
attention kernels keep their layout (Linen's and NNX's query/key/value kernels are
``(D, heads, head_dim)``, the output kernel ``(heads, head_dim, D)`` on every
supported release). A final LayerNorm and a classifier head on the mean token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybridcheck import compat
from hybridcheck.cases.case_mutants import CaseMutant
from hybridcheck.compat import nnx
from hybridcheck.describe import strategies as hst
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.migration_case import MigrationCase

D, HEADS, MLP, L, T, C = 8, 2, 8, 2, 3, 3
"""Width, attention heads (head_dim D // HEADS), MLP width, layers, tokens, classes.
The MLP's kernels are square (a transposed or swapped kernel keeps every shape), and
few distinct leaf shapes keep the converter check cheap (it compiles per shape)."""


def _positions() -> np.ndarray:
    angle = np.arange(T)[:, None] / 10000.0 ** (np.arange(0, D, 2) / D)[None, :]
    return np.stack([np.sin(angle), np.cos(angle)], -1).reshape(1, T, D).astype("f4")


POSITIONS = _positions()
"""Sinusoidal position encodings (with a batch axis) added to the inputs on both sides.
Besides telling the tokens apart, they keep every row from being constant. LayerNorm
of a constant row is at ``var = 0``, where it is ill-conditioned (its gradient scales
by ``1 / sqrt(eps)``), and with zero-initialized biases a constant row stays constant
through every block: a few steps from such an input (Hypothesis draws them first)
amplify float64 rounding to O(1) in the original alone (measured: a 1e-15 relative
change of the head kernel moved the first layer's query gradient by O(1)), and
``trajectory_matches_before`` failed the exact migration."""
PROJECTIONS = ("query", "key", "value", "out")
HEADS_AXIS = {"query": 1, "key": 1, "value": 1, "out": 0}
"""Where each attention kernel keeps its heads: (D, H, K) in, (H, K, D) out."""


class LinenEncoderBlock(nn.Module):
    @nn.compact
    def __call__(self, x: Any, _: Any) -> tuple[Any, None]:
        h = nn.LayerNorm(name="norm1")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS, name="attn")(h)
        h = nn.Dense(MLP, name="mlp_in")(nn.LayerNorm(name="norm2")(x))
        return x + nn.Dense(D, name="mlp_out")(nn.gelu(h)), None


class LinenEncoder(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        layers = nn.scan(
            LinenEncoderBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=L,
        )
        x, _ = layers(name="layers")(x + POSITIONS, None)
        return nn.Dense(C, name="head")(jnp.mean(nn.LayerNorm(name="norm")(x), -2))


def attention(query: Any, key: Any, value: Any, mask: Any = None, **_: Any) -> Any:
    """Softmax attention in the inputs' dtype, as Linen's ``dot_product_attention``.

    ``nnx.MultiHeadAttention``'s default (Flax 0.11+) calls the fused
    ``jax.nn.dot_product_attention``, whose softmax runs in float32 even under x64: in
    the float64 comparisons its rounding (~0.4x the float32 noise) has one sign on
    every example on jax 0.7.2 / Flax 0.11.2, which the verdict's same-direction rule
    fails. Dropout is off (rate 0), so the other keywords change nothing here.
    """
    if mask is not None:
        raise ValueError("the encoder's attention takes no mask")
    query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    weights = jax.nn.softmax(jnp.einsum("...qhd,...khd->...hqk", query, key), -1)
    return jnp.einsum("...hqk,...khd->...qhd", weights, value)


@dataclasses.dataclass(frozen=True)
class EncoderVariant:
    """How the migrated encoder is written; the defaults are the exact migration
    (``fused``: nnx.MultiHeadAttention's own attention function, see
    :func:`attention`)."""

    eps: float = 1e-6
    approximate: bool = True
    fused: bool = False


class NnxEncoderBlock(nnx.Module):
    def __init__(self, rngs: Any, v: EncoderVariant) -> None:
        self.norm1 = nnx.LayerNorm(D, epsilon=v.eps, rngs=rngs)
        own: dict[str, Any] = {} if v.fused else {"attention_fn": attention}
        self.attn = nnx.MultiHeadAttention(
            num_heads=HEADS, in_features=D, decode=False, rngs=rngs, **own
        )
        self.norm2 = nnx.LayerNorm(D, epsilon=v.eps, rngs=rngs)
        self.mlp_in = nnx.Linear(D, MLP, rngs=rngs)
        self.mlp_out = nnx.Linear(MLP, D, rngs=rngs)
        self.approximate = v.approximate

    def __call__(self, x: Any) -> Any:
        x = x + self.attn(self.norm1(x))
        h = jax.nn.gelu(self.mlp_in(self.norm2(x)), approximate=self.approximate)
        return x + self.mlp_out(h)


class NnxEncoder(nnx.Module):
    def __init__(self, rngs: Any, v: EncoderVariant) -> None:
        self.layers = compat.module_list(NnxEncoderBlock(rngs, v) for _ in range(L))
        self.norm = nnx.LayerNorm(D, epsilon=v.eps, rngs=rngs)
        self.head = nnx.Linear(D, C, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        x = x + POSITIONS
        for layer in self.layers:
            x = layer(x)
        return self.head(jnp.mean(self.norm(x), -2))


def _xent(logits: Any, labels: Any) -> Any:
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


@st.composite
def _sequence_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = 4  # one shape bucket: each bucket compiles every float32/float64 function anew
    x = draw(hst.bounded_arrays((n, T, D), max_magnitude=1.0))
    return x, draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, C - 1)))


_ENCODER = LinenEncoder()
LINEN_ENCODER = HybridCase(
    name="linen-encoder",
    # jitted: eagerly, nn.scan's init traces and compiles a new lax.scan every call
    init=jax.jit(lambda key: {"linen": _ENCODER.init(key, jnp.zeros((1, T, D)))}),
    loss=lambda p, b: _xent(_ENCODER.apply(p["linen"], b[0]), b[1]),
    batches=_sequence_batches(),
)


def nnx_encoder(
    v: EncoderVariant, model: type = NnxEncoder, name: str = "nnx-encoder"
) -> HybridCase:
    """The NNX rewrite ``model(rngs, v)``, written as ``v`` says.

    The module is built inside the traced functions (its initializers are then
    compiled away, not compiled one by one for every kernel shape).
    """

    def loss(p: Any, b: Any) -> Any:
        built = compat.module_with_params(model(nnx.Rngs(0), v), p["nnx"])
        return _xent(built(b[0]), b[1])

    return HybridCase(
        name=name,
        init=jax.jit(
            lambda key: {"nnx": compat.params_as_dict(model(nnx.Rngs(key), v))}
        ),
        loss=loss,
        batches=_sequence_batches(),
    )


def _reverse_heads(attn: Any, which: Sequence[str]) -> dict[str, Any]:
    out = {k: dict(attn[k]) for k in PROJECTIONS}
    for k in which:
        axis = HEADS_AXIS[k]
        out[k]["kernel"] = jnp.flip(out[k]["kernel"], axis)
        if k != "out":  # the output bias is per feature, not per head
            out[k]["bias"] = jnp.flip(out[k]["bias"], 0)
    return out


def _slice(stacked: Any, j: int) -> Any:
    return jax.tree_util.tree_map(lambda a: a[j], stacked)


def _block(layer: Any, reverse_heads: Sequence[str]) -> dict[str, Any]:
    block = {k: dict(layer[k]) for k in ("norm1", "norm2", "mlp_in", "mlp_out")}
    return {**block, "attn": _reverse_heads(layer["attn"], reverse_heads)}


def encoder_to_nnx(
    p: Any, *, reverse_heads: Sequence[str] = (), reverse_layers: bool = False
) -> Any:
    """Linen scan params -> the NNX list: layer ``i`` is slice ``i`` of the scan axis.

    ``reverse_heads`` names projections whose heads are taken in reverse order: all
    four is the same function (heads are interchangeable), ``("out",)`` alone a bug;
    ``reverse_layers`` (a bug) unstacks the scan axis back to front.
    """
    v = p["linen"]["params"]
    order = range(L - 1, -1, -1) if reverse_layers else range(L)
    layers = {
        i: _block(_slice(v["layers"], j), reverse_heads) for i, j in enumerate(order)
    }
    return {"nnx": {"layers": layers, "norm": dict(v["norm"]), "head": dict(v["head"])}}


def nnx_to_encoder(p: Any, *, reverse_heads: Sequence[str] = ()) -> Any:
    """The inverse: the list's layers stacked on a leading scan axis."""
    v = p["nnx"]
    blocks = [_block(v["layers"][i], reverse_heads) for i in range(L)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *blocks)
    params = {"layers": stacked, "norm": dict(v["norm"]), "head": dict(v["head"])}
    return {"linen": {"params": params}}


def encoder_migration(
    name: str,
    v: EncoderVariant | None = None,
    *,
    reverse_heads: Sequence[str] = (),
    reverse_layers: bool = False,
) -> MigrationCase:
    """The migration, exact by default; the keywords are the PR's bugs (or, for
    ``reverse_heads`` on all four projections, a correct reordering)."""
    heads = tuple(reverse_heads)
    return MigrationCase(
        name,
        LINEN_ENCODER,
        nnx_encoder(v or EncoderVariant()),
        lambda p: encoder_to_nnx(p, reverse_heads=heads, reverse_layers=reverse_layers),
        None if reverse_layers else lambda p: nnx_to_encoder(p, reverse_heads=heads),
        description=f"{L}-layer transformer encoder, Linen nn.scan -> NNX list",
    )


def encoder_mutants() -> list[CaseMutant]:
    """Bugs of a scan -> list encoder migration, each with the invariant naming it."""
    return [
        CaseMutant(
            "encoder-layernorm-eps",
            lambda: encoder_migration("mig-enc-eps", EncoderVariant(eps=1e-5)),
            "loss_matches_before",
            "LayerNorm epsilon 1e-6 -> 1e-5 in the NNX encoder",
        ),
        CaseMutant(
            "encoder-exact-gelu",
            lambda: encoder_migration(
                "mig-enc-gelu", EncoderVariant(approximate=False)
            ),
            "loss_matches_before",
            "exact GELU in the NNX encoder where Linen's nn.gelu is the tanh one",
        ),
        CaseMutant(
            "encoder-out-heads-reversed",
            lambda: encoder_migration("mig-enc-heads", reverse_heads=("out",)),
            "loss_matches_before",
            "the converter reverses the heads of the output projection only",
        ),
        CaseMutant(
            "encoder-layers-reversed",
            lambda: encoder_migration("mig-enc-layers", reverse_layers=True),
            "loss_matches_before",
            "the converter unstacks the scan axis into the list back to front",
        ),
    ]
