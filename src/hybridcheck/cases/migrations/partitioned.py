"""A tensor-parallel block (heads split on a ``model`` mesh axis), Linen -> NNX.

Linen declares logical names with ``nn.with_logical_partitioning`` on a
``DenseGeneral`` kernel of shape ``(D, H, K)``; the NNX side flattens the heads into
a ``(D, H*K)`` ``nnx.Linear`` with ``nnx.with_partitioning``. ``AXIS_RULES`` maps
the logical names of both sides onto the mesh. Sharding the heads axis of the Linen
kernel is the same placement as sharding the flattened axis of the NNX kernel
(heads are its major part), which ``sharding_matches_before`` verifies element by
element through the converter.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.core import meta

from hybridcheck import compat
from hybridcheck.cases.migrations._shared import D, H, K, mse, vector_batches
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase

AXIS_RULES = (("heads", "model"), ("mlp", "model"), ("embed", None), ("kv", None))


def _logical(init: Any, names: tuple[Any, ...]) -> Any:
    return nn.with_logical_partitioning(init, names)


class LinenTP(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        lecun, zeros = nn.initializers.lecun_normal(), nn.initializers.zeros_init()
        h = nn.DenseGeneral(
            (H, K),
            kernel_init=_logical(lecun, ("embed", "heads", "kv")),
            bias_init=_logical(zeros, ("heads", "kv")),
            name="heads",
        )(x)
        h = nn.gelu(h.reshape(x.shape[:-1] + (H * K,)))
        return nn.Dense(
            D,
            kernel_init=_logical(lecun, ("mlp", "embed")),
            bias_init=_logical(zeros, ("embed",)),
            name="out",
        )(h)


@dataclasses.dataclass(frozen=True)
class Names:
    """The NNX side's logical names per parameter; the defaults are correct."""

    heads_kernel: tuple[Any, ...] = ("embed", "mlp")
    heads_bias: tuple[Any, ...] = ("mlp",)
    out_kernel: tuple[Any, ...] = ("mlp", "embed")


class NnxTP(nnx.Module):
    def __init__(self, rngs: Any, names: Names = Names()) -> None:
        lecun, zeros = nnx.initializers.lecun_normal(), nnx.initializers.zeros_init()
        self.heads = nnx.Linear(
            D,
            H * K,
            kernel_init=nnx.with_partitioning(lecun, names.heads_kernel),
            bias_init=nnx.with_partitioning(zeros, names.heads_bias),
            rngs=rngs,
        )
        self.out = nnx.Linear(
            H * K,
            D,
            kernel_init=nnx.with_partitioning(lecun, names.out_kernel),
            rngs=rngs,
        )

    def __call__(self, x: Any) -> Any:
        return self.out(nn.gelu(self.heads(x)))


_TP = LinenTP()
_X0 = jnp.zeros((1, D))

LINEN_TP = HybridCase(
    name="linen-tp",
    init=lambda key: {"linen": meta.unbox(_TP.init(key, _X0))},
    loss=lambda p, b: mse(_TP.apply(p["linen"], b[0]), b[1]),
    batches=vector_batches(),
)
LINEN_TP_SPECS = {
    "linen": compat.linen_partition_specs(
        jax.eval_shape(lambda: _TP.init(jax.random.PRNGKey(0), _X0))
    )
}


def _nnx_model(key: Any, names: Names) -> NnxTP:
    with compat.unsharded_variables():  # keep the metadata, place nothing
        return NnxTP(nnx.Rngs(key), names)


def nnx_tp(names: Names = Names()) -> tuple[HybridCase, Any]:
    """The NNX side and its specs (read from the model's metadata)."""
    template = _nnx_model(0, names)

    def loss(p: Any, b: Any) -> Any:
        return mse(compat.module_with_params(template, p["nnx"])(b[0]), b[1])

    case = HybridCase(
        name="nnx-tp",
        init=lambda key: {"nnx": compat.params_as_dict(_nnx_model(key, names))},
        loss=loss,
        batches=vector_batches(),
    )
    return case, {"nnx": compat.nnx_partition_specs(template)}


def tp_to_nnx(p: Any) -> Any:
    v = p["linen"]["params"]
    return {
        "nnx": {
            "heads": {
                "kernel": v["heads"]["kernel"].reshape(D, H * K),
                "bias": v["heads"]["bias"].reshape(H * K),
            },
            "out": dict(v["out"]),
        }
    }


def nnx_to_tp(p: Any) -> Any:
    v = p["nnx"]
    heads = {
        "kernel": v["heads"]["kernel"].reshape(D, H, K),
        "bias": v["heads"]["bias"].reshape(H, K),
    }
    return {"linen": {"params": {"heads": heads, "out": dict(v["out"])}}}
