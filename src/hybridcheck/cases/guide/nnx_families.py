"""The guide's NNX families: an NNX model holding Linen parts in ``bridge.ToNNX``.

Each is written as a user would: the model, the loss, the user's own train step and
one ``from_nnx`` call.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from hybridcheck.cases.guide.common import HID, IN, OUT, nnx_train_step, xy, xy_loss
from hybridcheck.cases.guide.layers import LinenDot, LinenMultiCollections
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.flaxmodels.functionalize import from_nnx

# -- to_nnx_dot: an NNX module holding bridge.ToNNX(LinenDot) ----------------------


class ToNNXDot(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.dot = nnx.bridge.ToNNX(LinenDot(OUT), rngs=rngs)
        self.b = nnx.Param(jax.random.uniform(rngs.params(), (1, OUT)))

    def __call__(self, x: Any) -> Any:
        return self.dot(x) + self.b


def to_nnx_dot(
    name: str = "guide-to_nnx_dot", tx: Any = optax.sgd, train_step: Any = None
) -> HybridCase:
    return from_nnx(
        name,
        model_fn=lambda rngs: nnx.bridge.lazy_init(ToNNXDot(rngs), jnp.ones((1, IN))),
        loss_fn=xy_loss,
        train_step=train_step or nnx_train_step(xy_loss),
        tx=tx,
        batches=xy(),
        description="NNX module holding bridge.ToNNX(LinenDot), lazy_init; SGD",
    )


# -- nnx_dropout_bn: ToNNX(nn.BatchNorm + nn.Dropout + nn.Dense) in NNX -------------


class LinenBlock(nn.Module):  # the Linen half: BatchNorm, Dropout, Dense
    @nn.compact
    def __call__(self, h: Any, train: bool) -> Any:
        h = nn.BatchNorm(use_running_average=not train)(h)
        h = nn.Dropout(0.5, deterministic=not train)(jax.nn.relu(h))
        return nn.Dense(OUT)(h)


class NNXDropoutBN(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.fc = nnx.Linear(IN, HID, rngs=rngs)
        self.block = nnx.bridge.ToNNX(LinenBlock(), rngs=rngs)

    def __call__(self, x: Any, *, train: bool = True, rngs: Any = None) -> Any:
        return self.block(self.fc(x), train, mutable=["batch_stats"], rngs=rngs)


def nnx_dropout_bn(
    name: str = "guide-nnx_dropout_bn", loss_fn: Any = xy_loss, train_step: Any = None
) -> HybridCase:
    return from_nnx(
        name,
        model_fn=lambda rngs: nnx.bridge.lazy_init(
            NNXDropoutBN(rngs), jnp.ones((2, IN))
        ),
        loss_fn=loss_fn,
        train_step=train_step or nnx_train_step(loss_fn),
        tx=lambda lr: optax.sgd(lr, momentum=0.9),
        batches=xy(),
        description="ToNNX(nn.BatchNorm + nn.Dropout + nn.Dense) in NNX; momentum",
    )


# -- lora: nnx.LoRA (LoRAParam) beside ToNNX(LinenDot) -----------------------------


class LoraModel(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.w = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (IN, HID)))
        self.lora = nnx.LoRA(IN, 2, HID, rngs=rngs)
        self.head = nnx.bridge.ToNNX(LinenDot(OUT), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.head(jnp.tanh(x @ self.w + self.lora(x)))


def lora() -> HybridCase:
    return from_nnx(
        "guide-lora",
        model_fn=lambda rngs: nnx.bridge.lazy_init(LoraModel(rngs), jnp.ones((1, IN))),
        loss_fn=xy_loss,
        train_step=nnx_train_step(xy_loss),
        tx=optax.sgd,
        batches=xy(),
        description="nnx.LoRA (lora_b = 0 at init) beside ToNNX(LinenDot); SGD",
    )


# -- counter: a Linen 'counter' collection (int32) through ToNNX -------------------


class CounterModel(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.fc = nnx.Linear(IN, HID, rngs=rngs)
        self.counted = nnx.bridge.ToNNX(LinenMultiCollections(OUT), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.counted(jnp.tanh(self.fc(x)), mutable=["counter"])


def counter() -> HybridCase:
    return from_nnx(
        "guide-counter",
        model_fn=lambda rngs: nnx.bridge.lazy_init(
            CounterModel(rngs), jnp.ones((1, IN))
        ),
        loss_fn=xy_loss,
        train_step=nnx_train_step(xy_loss),
        tx=optax.sgd,
        batches=xy(),
        description="Linen counter/sow module through ToNNX: int32 state; SGD",
    )
