"""Case (c): a Linen Embed feeding an NNX attention block (MHA + LayerNorm)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase

VOCAB, DIM, HEADS, SEQ = 11, 8, 2, 4


class Block(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.norm1 = nnx.LayerNorm(DIM, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=HEADS, in_features=DIM, decode=False, rngs=rngs
        )
        self.norm2 = nnx.LayerNorm(DIM, rngs=rngs)
        self.out = nnx.Linear(DIM, VOCAB, rngs=rngs)

    def __call__(self, h: Any) -> Any:
        y = self.norm1(h)
        h = h + self.attn(y, y, y)
        return self.out(self.norm2(h))


_BLOCK = Block(nnx.Rngs(0))
_EMBED = nn.Embed(VOCAB, DIM)


def init(key: jax.Array) -> dict[str, Any]:
    k_embed, k_block = jax.random.split(key)
    return {
        "linen": _EMBED.init(k_embed, jnp.zeros((1, SEQ), jnp.int32)),
        "nnx": compat.params_as_dict(Block(nnx.Rngs(k_block))),
    }


def loss(params: dict[str, Any], batch: Any) -> Any:
    tokens, targets = batch
    h = _EMBED.apply(params["linen"], tokens)
    logits = compat.module_with_params(_BLOCK, params["nnx"])(h)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


@st.composite
def batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.sampled_from([4, 8]))
    ids = hnp.arrays(np.int32, (n, SEQ), elements=st.integers(0, VOCAB - 1))
    return draw(ids), draw(ids)


CASE = HybridCase(
    name="linen-embed->nnx-attention",
    init=init,
    loss=loss,
    batches=batches(),
    description="Linen Embed -> NNX block (LayerNorm, MultiHeadAttention, Linear)",
)
