"""The seed's story: a two-layer Linen MLP -> the seed's hybrid -> an NNX MLP."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from hybridcheck import compat
from hybridcheck import seed as core
from hybridcheck.cases.migrations._shared import (
    mse,
)
from hybridcheck.cases.seed import SEED_CASE
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = jax.nn.relu(nn.Dense(core.HIDDEN)(x))
        return nn.Dense(2)(h)


class NnxMLP(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.fc1 = nnx.Linear(3, core.HIDDEN, rngs=rngs)
        self.fc2 = nnx.Linear(core.HIDDEN, 2, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.fc2(jax.nn.relu(self.fc1(x)))


_MLP, _NNX_MLP = LinenMLP(), NnxMLP(nnx.Rngs(0))

LINEN_MLP = HybridCase(
    name="linen-mlp",
    init=lambda key: {"linen": _MLP.init(key, jnp.zeros((1, 3)))},
    loss=lambda p, b: mse(_MLP.apply(p["linen"], b[0]), b[1]),
    batches=SEED_CASE.batches,
)
NNX_MLP = HybridCase(
    name="nnx-mlp",
    init=lambda key: {"nnx": compat.params_as_dict(NnxMLP(nnx.Rngs(key)))},
    loss=lambda p, b: mse(compat.module_with_params(_NNX_MLP, p["nnx"])(b[0]), b[1]),
    batches=SEED_CASE.batches,
)


def mlp_to_seed(p: Any) -> core.HybridParams:
    v = p["linen"]["params"]
    return core.HybridParams(
        nnx=dict(v["Dense_0"]), linen={"params": dict(v["Dense_1"])}
    )


def seed_to_mlp(p: core.HybridParams) -> Any:
    return {
        "linen": {
            "params": {"Dense_0": dict(p.nnx), "Dense_1": dict(p.linen["params"])}
        }
    }


def seed_to_nnx(p: core.HybridParams) -> Any:
    return {"nnx": {"fc1": dict(p.nnx), "fc2": dict(p.linen["params"])}}


def nnx_to_seed(p: Any) -> core.HybridParams:
    return core.HybridParams(
        nnx=dict(p["nnx"]["fc1"]), linen={"params": dict(p["nnx"]["fc2"])}
    )
