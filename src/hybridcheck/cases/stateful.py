"""Case (d): BatchNorm and Dropout on both sides of the NNX/Linen boundary.

Running statistics are non-trainable halves that the step threads through; dropout
keys travel in the batch, and ``nnx.Rngs`` is built inside the differentiated
function from that key (closing over an ``Rngs`` breaks under ``jax.grad`` on Flax
>= 0.11, google/flax#5050).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from hypothesis import strategies as st

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.describe import strategies as hst
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.invariants import fail

IN, WIDTH, RATE = 4, 8, 0.25


class NnxPart(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.fc = nnx.Linear(IN, WIDTH, rngs=rngs)
        self.bn = nnx.BatchNorm(WIDTH, rngs=rngs)
        self.drop = nnx.Dropout(RATE, rngs=rngs)

    def __call__(self, x: Any, *, train: bool, rngs: Any) -> Any:
        h = self.bn(self.fc(x), use_running_average=not train)
        return self.drop(jax.nn.relu(h), deterministic=not train, rngs=rngs)


class LinenPart(nn.Module):
    @nn.compact
    def __call__(self, h: Any, *, train: bool) -> Any:
        h = nn.Dense(WIDTH)(h)
        h = nn.BatchNorm(use_running_average=not train)(h)
        h = nn.Dropout(RATE, deterministic=not train)(jax.nn.relu(h))
        return nn.Dense(1)(h)


_NNX = NnxPart(nnx.Rngs(0))
_LINEN = LinenPart()


def init(key: jax.Array) -> dict[str, Any]:
    k_nnx, k_linen = jax.random.split(key)
    part = NnxPart(nnx.Rngs(k_nnx))
    variables = _LINEN.init(k_linen, jnp.zeros((2, WIDTH)), train=False)
    return {
        "nnx": compat.params_as_dict(part),
        "linen": {"params": variables["params"]},
        "nnx_stats": compat.params_as_dict(part, nnx.BatchStat),
        "linen_stats": {"batch_stats": variables["batch_stats"]},
    }


def forward(params: dict[str, Any], batch: dict[str, Any], *, train: bool) -> Any:
    """Returns ``(predictions, new_nnx_stats, new_linen_stats)``."""
    k_nnx, k_linen = jax.random.split(batch["rng"])
    part = compat.module_with_state(
        _NNX, [(nnx.Param, params["nnx"]), (nnx.BatchStat, params["nnx_stats"])]
    )
    h = part(batch["x"], train=train, rngs=nnx.Rngs(dropout=k_nnx))
    variables = {**params["linen"], **params["linen_stats"]}
    if train:
        out, updates = _LINEN.apply(
            variables, h, train=True, rngs={"dropout": k_linen}, mutable=["batch_stats"]
        )
    else:
        out, updates = _LINEN.apply(variables, h, train=False), params["linen_stats"]
    return out, compat.params_as_dict(part, nnx.BatchStat), dict(updates)


def loss(params: dict[str, Any], batch: dict[str, Any]) -> Any:
    out, _, _ = forward(params, batch, train=True)
    return jnp.mean((out - batch["y"]) ** 2)


def step(params: dict[str, Any], batch: dict[str, Any], lr: Any) -> dict[str, Any]:
    """SGD on the parameters; the running statistics from the same forward pass."""

    def loss_and_stats(p: Any) -> Any:
        out, nnx_stats, linen_stats = forward(p, batch, train=True)
        return jnp.mean((out - batch["y"]) ** 2), (nnx_stats, linen_stats)

    grads, (nnx_stats, linen_stats) = jax.grad(loss_and_stats, has_aux=True)(params)
    return {
        "nnx": jax.tree.map(lambda p, g: p - lr * g, params["nnx"], grads["nnx"]),
        "linen": jax.tree.map(lambda p, g: p - lr * g, params["linen"], grads["linen"]),
        "nnx_stats": nnx_stats,
        "linen_stats": linen_stats,
    }


def state_after_forward(params: dict[str, Any], batch: dict[str, Any]) -> Any:
    """The statistics halves as one training forward pass leaves them."""
    _, nnx_stats, linen_stats = forward(params, batch, train=True)
    return {"nnx_stats": nnx_stats, "linen_stats": linen_stats}


def reseed(params: Any, batch: dict[str, Any], key: Any) -> Any:
    """The same example with another dropout key."""
    return params, {**batch, "rng": key}


def assert_eval_mode_ignores_rng(params: Any, batch: Any, lr: float) -> None:
    """Eval mode: no dropout, running statistics: the RNG key must not matter."""
    a, *_ = forward(params, batch, train=False)
    b, *_ = forward(params, {**batch, "rng": jax.random.PRNGKey(12345)}, train=False)
    if not np.array_equal(np.asarray(a), np.asarray(b)):
        fail(
            "eval_mode_ignores_rng",
            [f"eval outputs differ by max {float(np.max(np.abs(a - b))):.3g}"],
            "Dropout is still active or BatchNorm uses batch statistics in eval mode: "
            "pass deterministic=True / use_running_average=True when not training.",
        )


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.sampled_from([4, 8]))
    return {
        "x": draw(hst.bounded_arrays((n, IN), max_magnitude=5.0)),
        "y": draw(hst.bounded_arrays((n, 1), max_magnitude=5.0)),
        "rng": jax.random.PRNGKey(draw(hst.seeds())),
    }


CASE = HybridCase(
    name="batchnorm+dropout",
    init=init,
    loss=loss,
    batches=batches(),
    step=step,
    sgd=True,
    non_trainable=("nnx_stats", "linen_stats"),
    extra_checks={"eval_mode_ignores_rng": assert_eval_mode_ignores_rng},
    state_fn=state_after_forward,
    reseed=reseed,
    description="nnx Linear/BatchNorm/Dropout -> Linen Dense/BatchNorm/Dropout/Dense",
)
