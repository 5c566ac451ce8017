"""A Dense + BatchNorm model whose step threads the statistics, Linen -> NNX."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from hybridcheck import compat
from hybridcheck.cases.migrations._shared import (
    D,
    W,
    mse,
    vector_batches,
)
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase


class LinenBN(nn.Module):
    @nn.compact
    def __call__(self, x: Any, train: bool) -> Any:
        h = nn.Dense(W, name="fc")(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(h)
        return nn.Dense(1, name="out")(jax.nn.relu(h))


class NnxBN(nnx.Module):
    def __init__(self, rngs: Any, momentum: float = 0.9) -> None:
        self.fc = nnx.Linear(D, W, rngs=rngs)
        self.bn = nnx.BatchNorm(W, momentum=momentum, rngs=rngs)
        self.out = nnx.Linear(W, 1, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.out(jax.nn.relu(self.bn(self.fc(x), use_running_average=False)))


_BN = LinenBN()


def _linen_bn_forward(p: Any, b: Any) -> Any:
    out, updates = _BN.apply(
        {**p["linen"], **p["stats"]}, b[0], train=True, mutable=["batch_stats"]
    )
    return mse(out, b[1]), dict(updates)


def _threading_sgd(forward: Any, *, thread: bool = True) -> Any:
    """SGD on the params half; the statistics half from the same forward pass."""

    def step(p: Any, b: Any, lr: Any) -> Any:
        def loss_of(train: Any) -> Any:
            return forward({**p, **train}, b)

        g, stats = jax.grad(loss_of, has_aux=True)(
            {k: v for k, v in p.items() if k != "stats"}
        )
        new = {k: jax.tree.map(lambda a, d: a - lr * d, p[k], g[k]) for k in g}
        return {**new, "stats": stats if thread else p["stats"]}

    return step


def _bn_case(name: str, init: Any, forward: Any, **changes: Any) -> HybridCase:
    fields: dict[str, Any] = {
        "name": name,
        "init": init,
        "loss": lambda p, b: forward(p, b)[0],
        "batches": vector_batches(),
        "step": _threading_sgd(forward),
        "sgd": True,
        "non_trainable": ("stats",),
        "state_fn": lambda p, b: {"stats": forward(p, b)[1]},
    }
    return HybridCase(**{**fields, **changes})


def _linen_bn_init(key: Any) -> Any:
    v = _BN.init(key, jnp.zeros((2, D)), train=False)
    return {
        "linen": {"params": v["params"]},
        "stats": {"batch_stats": v["batch_stats"]},
    }


LINEN_BN = _bn_case("linen-batchnorm", _linen_bn_init, _linen_bn_forward)


def nnx_bn_case(momentum: float = 0.9, *, thread: bool = True) -> HybridCase:
    template = NnxBN(nnx.Rngs(0), momentum)

    def forward(p: Any, b: Any) -> Any:
        m = compat.module_with_state(
            template, [(nnx.Param, p["nnx"]), (nnx.BatchStat, p["stats"])]
        )
        return mse(m(b[0]), b[1]), compat.params_as_dict(m, nnx.BatchStat)

    def init(key: Any) -> Any:
        m = NnxBN(nnx.Rngs(key), momentum)
        return {
            "nnx": compat.params_as_dict(m),
            "stats": compat.params_as_dict(m, nnx.BatchStat),
        }

    return _bn_case(
        "nnx-batchnorm", init, forward, step=_threading_sgd(forward, thread=thread)
    )


def bn_to_nnx(p: Any) -> Any:
    v, s = p["linen"]["params"], p["stats"]["batch_stats"]
    return {
        "nnx": {k: dict(v[k]) for k in ("fc", "bn", "out")},
        "stats": {"bn": dict(s["bn"])},
    }


def nnx_to_bn(p: Any) -> Any:
    return {
        "linen": {"params": {k: dict(p["nnx"][k]) for k in ("fc", "bn", "out")}},
        "stats": {"batch_stats": {"bn": dict(p["stats"]["bn"])}},
    }
