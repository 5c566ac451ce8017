"""Flax's ImageNet ResNet, half-migrated: the stem and the head in NNX, a residual
block still in Linen (``bridge.ToNNX``), every layer declared ``dtype=jnp.float32``
as the example writes it (``conv = partial(nn.Conv, use_bias=False,
dtype=self.dtype)``, BatchNorm momentum 0.9 / epsilon 1e-5, the block's last
BatchNorm scale initialised to zero), L2 weight decay in the loss, Nesterov momentum.
Images are all-zero or random: an all-zero batch puts every ReLU after a BatchNorm
at its kink, with the BatchNorm variance zero.

The bug: the block's ReLU replaced by a memory-saving ``custom_vjp`` whose backward
pass forgot the mask (the cotangent passes where the input was negative).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hybridcheck as hc

N, SIDE, CHANNELS, CLASSES, WEIGHT_DECAY = 4, 6, 4, 3, 1e-4


@jax.custom_vjp
def fused_relu(x: Any) -> Any:
    return jnp.maximum(x, 0)


# BUG: the backward pass returns the cotangent unmasked (should be ct * (x > 0)).
fused_relu.defvjp(lambda x: (jnp.maximum(x, 0), x), lambda x, ct: (ct,))


class ResNetBlock(nn.Module):  # flax/examples/imagenet/models.py, as written there
    filters: int
    dtype: Any = jnp.float32
    relu: Any = nn.relu

    @nn.compact
    def __call__(self, x: Any, train: bool = True) -> Any:
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
        )
        residual = x
        y = conv(self.filters, (3, 3))(x)
        y = self.relu(norm()(y))
        y = conv(self.filters, (3, 3))(y)
        y = norm(scale_init=nn.initializers.zeros_init())(y)
        return self.relu(residual + y)


class HalfMigratedResNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, relu: Any = nn.relu) -> None:
        self.stem = nnx.Conv(
            3, CHANNELS, (3, 3), use_bias=False, dtype=jnp.float32, rngs=rngs
        )
        self.bn = nnx.BatchNorm(
            CHANNELS, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, rngs=rngs
        )
        self.block = nnx.bridge.ToNNX(ResNetBlock(CHANNELS, relu=relu), rngs=rngs)
        self.head = nnx.Linear(CHANNELS, CLASSES, dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        h = nnx.relu(self.bn(self.stem(x)))
        h = self.block(h, mutable=["batch_stats"])
        return self.head(jnp.mean(h, axis=(1, 2)))


def loss_fn(model: Any, batch: Any) -> Any:
    logits = model(batch["image"])
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    params = nnx.state(model, nnx.Param)
    l2 = sum(jnp.sum(p**2) for p in jax.tree.leaves(params))
    return xent.mean() + WEIGHT_DECAY * 0.5 * l2


@nnx.jit
def train_step(model: Any, optimizer: Any, batch: Any) -> None:
    grads = nnx.grad(loss_fn)(model, batch)
    optimizer.update(model, grads)


def batches() -> st.SearchStrategy[Any]:
    shape = (N, SIDE, SIDE, 3)
    images = st.one_of(
        st.just(np.zeros(shape, np.float32)),
        hnp.arrays(np.float32, shape, elements={"min_value": -1, "max_value": 1}),
    )
    labels = hnp.arrays(np.int32, (N,), elements=st.integers(0, CLASSES - 1))
    return st.fixed_dictionaries({"image": images, "label": labels})


def nesterov(lr: Any) -> Any:
    return optax.sgd(lr, momentum=0.9, nesterov=True)


def case(
    name: str = "resnet-f32", relu: Any = nn.relu, tx: Any = nesterov
) -> hc.HybridCase:
    return hc.from_nnx(
        name,
        model_fn=lambda rngs: nnx.bridge.lazy_init(
            HalfMigratedResNet(rngs, relu), jnp.ones((1, SIDE, SIDE, 3))
        ),
        loss_fn=loss_fn,
        train_step=train_step,
        tx=tx,
        batches=batches(),
    )


def buggy_case() -> hc.HybridCase:
    return case("resnet-f32-fused-relu-vjp", relu=fused_relu)
