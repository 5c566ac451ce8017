"""A pre-norm self-attention block: Linen MHDPA -> nnx.MultiHeadAttention."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from hypothesis import strategies as st

from hybridcheck import compat
from hybridcheck.cases.migrations._shared import (
    D,
    H,
    T,
    mse,
)
from hybridcheck.compat import nnx
from hybridcheck.describe import strategies as hst
from hybridcheck.describe.hybrid_case import HybridCase


class LinenAttention(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = nn.LayerNorm(name="norm")(x)
        return x + nn.MultiHeadDotProductAttention(num_heads=H, name="attn")(h)


class NnxAttention(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.norm = nnx.LayerNorm(D, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=H, in_features=D, decode=False, rngs=rngs
        )

    def __call__(self, x: Any) -> Any:
        return x + self.attn(self.norm(x))


@st.composite
def _sequence_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.sampled_from([2, 4]))
    return (
        draw(hst.bounded_arrays((n, T, D), max_magnitude=3.0)),
        draw(hst.bounded_arrays((n, T, D), max_magnitude=3.0)),
    )


_ATTN, _NNX_ATTN = LinenAttention(), NnxAttention(nnx.Rngs(0))
LINEN_ATTENTION = HybridCase(
    name="linen-attention",
    init=lambda key: {"linen": _ATTN.init(key, jnp.zeros((1, T, D)))},
    loss=lambda p, b: mse(_ATTN.apply(p["linen"], b[0]), b[1]),
    batches=_sequence_batches(),
)
NNX_ATTENTION = HybridCase(
    name="nnx-attention",
    init=lambda key: {"nnx": compat.params_as_dict(NnxAttention(nnx.Rngs(key)))},
    loss=lambda p, b: mse(compat.module_with_params(_NNX_ATTN, p["nnx"])(b[0]), b[1]),
    batches=_sequence_batches(),
)


def attention_to_nnx(p: Any, *, swap_heads: bool = False) -> Any:
    v = p["linen"]["params"]
    attn = {k: dict(v["attn"][k]) for k in ("query", "key", "value", "out")}
    if swap_heads:  # BUG variant: (in, heads, head_dim) read as (in, head_dim, heads)
        attn["query"]["kernel"] = jnp.swapaxes(attn["query"]["kernel"], 1, 2)
    return {"nnx": {"norm": dict(v["norm"]), "attn": attn}}


def nnx_to_attention(p: Any) -> Any:
    v = p["nnx"]
    attn = {k: dict(v["attn"][k]) for k in ("query", "key", "value", "out")}
    return {"linen": {"params": {"norm": dict(v["norm"]), "attn": attn}}}
