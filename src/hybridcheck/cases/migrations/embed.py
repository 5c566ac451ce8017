"""An Embed -> mean -> Dense classifier, Linen -> NNX."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybridcheck import compat
from hybridcheck.cases.migrations._shared import (
    C,
    D,
    T,
    V,
)
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase


class LinenEmbed(nn.Module):
    @nn.compact
    def __call__(self, tokens: Any) -> Any:
        e = nn.Embed(V, D, name="embed")(tokens)
        return nn.Dense(C, name="head")(jnp.mean(e, axis=-2))


class NnxEmbed(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.embed = nnx.Embed(V, D, rngs=rngs)
        self.head = nnx.Linear(D, C, rngs=rngs)

    def __call__(self, tokens: Any) -> Any:
        return self.head(jnp.mean(self.embed(tokens), axis=-2))


def _xent(logits: Any, labels: Any) -> Any:
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


@st.composite
def _token_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.sampled_from([4, 8]))
    tokens = draw(hnp.arrays(np.int32, (n, T), elements=st.integers(0, V - 1)))
    return tokens, draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, C - 1)))


_EMBED, _NNX_EMBED = LinenEmbed(), NnxEmbed(nnx.Rngs(0))
LINEN_EMBED = HybridCase(
    name="linen-embed",
    init=lambda key: {"linen": _EMBED.init(key, jnp.zeros((1, T), jnp.int32))},
    loss=lambda p, b: _xent(_EMBED.apply(p["linen"], b[0]), b[1]),
    batches=_token_batches(),
)
NNX_EMBED = HybridCase(
    name="nnx-embed",
    init=lambda key: {"nnx": compat.params_as_dict(NnxEmbed(nnx.Rngs(key)))},
    loss=lambda p, b: _xent(
        compat.module_with_params(_NNX_EMBED, p["nnx"])(b[0]), b[1]
    ),
    batches=_token_batches(),
)


def embed_to_nnx(p: Any) -> Any:
    v = p["linen"]["params"]
    return {"nnx": {"embed": dict(v["embed"]), "head": dict(v["head"])}}


def nnx_to_embed(p: Any) -> Any:
    return {"linen": {"params": {k: dict(p["nnx"][k]) for k in ("embed", "head")}}}
