"""A pre-norm block: LayerNorm, multi-head projection, GELU, square kernel, residual."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from hybridcheck import compat
from hybridcheck.cases.migrations._shared import (
    D,
    H,
    K,
    mse,
    vector_batches,
)
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = nn.LayerNorm(epsilon=1e-6, name="norm")(x)
        h = nn.DenseGeneral((H, K), name="heads")(h)
        h = nn.gelu(h.reshape(x.shape[:-1] + (H * K,)), approximate=True)
        return x + nn.Dense(D, name="mix")(h)


@dataclasses.dataclass(frozen=True)
class BlockVariant:
    """How the migrated block is written; the defaults are the exact migration."""

    eps: float = 1e-6
    approximate: bool = True
    residual: bool = True
    einsum: bool = False
    reduce: str = "mean"


class NnxBlock(nnx.Module):
    def __init__(self, rngs: Any, eps: float = 1e-6) -> None:
        self.norm = nnx.LayerNorm(D, epsilon=eps, rngs=rngs)
        self.heads = nnx.Linear(D, H * K, rngs=rngs)
        self.mix = nnx.Linear(H * K, D, rngs=rngs)


_BLOCK = LinenBlock()


def block_after(v: BlockVariant) -> HybridCase:
    template = NnxBlock(nnx.Rngs(0), eps=v.eps)

    def forward(p: Any, x: Any) -> Any:
        m = compat.module_with_params(template, p["nnx"])
        h = m.norm(x)
        if v.einsum:  # the same contraction, another summation order
            heads = compat.params_as_dict(m)["heads"]
            h = jnp.einsum("bd,dk->bk", h, heads["kernel"]) + heads["bias"][None, :]
        else:
            h = m.heads(h)
        h = m.mix(jax.nn.gelu(h, approximate=v.approximate))
        return x + h if v.residual else h

    def loss(p: Any, b: Any) -> Any:
        sq = (forward(p, b[0]) - b[1]) ** 2
        return (
            jnp.sum(sq) / sq.size
            if v.reduce == "sum/size"
            else getattr(jnp, v.reduce)(sq)
        )

    return HybridCase(
        name="nnx-block",
        init=lambda key: {"nnx": compat.params_as_dict(NnxBlock(nnx.Rngs(key), v.eps))},
        loss=loss,
        batches=vector_batches(),
    )


LINEN_BLOCK = HybridCase(
    name="linen-block",
    init=lambda key: {"linen": _BLOCK.init(key, jnp.zeros((1, D)))},
    loss=lambda p, b: mse(_BLOCK.apply(p["linen"], b[0]), b[1]),
    batches=vector_batches(),
)


def block_to_nnx(
    p: Any, *, transpose_mix: bool = False, heads_order: str = "HK"
) -> Any:
    v = p["linen"]["params"]
    kernel = v["heads"]["kernel"]  # (D, H, K)
    if heads_order == "KH":  # BUG variant: heads flattened in the wrong order
        kernel = jnp.swapaxes(kernel, 1, 2)
    mix = v["mix"]["kernel"]
    return {
        "nnx": {
            "norm": dict(v["norm"]),
            "heads": {
                "kernel": kernel.reshape(D, H * K),
                "bias": v["heads"]["bias"].reshape(H * K),
            },
            "mix": {
                "kernel": mix.T if transpose_mix else mix,
                "bias": v["mix"]["bias"],
            },
        }
    }


def nnx_to_block(p: Any) -> Any:
    v = p["nnx"]
    return {
        "linen": {
            "params": {
                "norm": dict(v["norm"]),
                "heads": {
                    "kernel": v["heads"]["kernel"].reshape(D, H, K),
                    "bias": v["heads"]["bias"].reshape(H, K),
                },
                "mix": dict(v["mix"]),
            }
        }
    }
