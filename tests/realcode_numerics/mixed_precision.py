"""A bfloat16-compute model, as mixed-precision training writes it (lm1b / t5x
style: float32 params, ``dtype=jnp.bfloat16`` compute): an NNX encoder and a Linen
head in ``bridge.ToNNX``, plain SGD.

The bug: static loss scaling (the loss multiplied by 2**8 so that small bfloat16
gradients do not underflow) whose gradients are applied without dividing by the
scale.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx
from hypothesis.extra import numpy as hnp

import hybridcheck as hc

LOSS_SCALE = 2.0**8


class Encoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc = nnx.Linear(
            4, 16, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=rngs
        )
        self.head = nnx.bridge.ToNNX(nn.Dense(3, dtype=jnp.bfloat16), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.head(nnx.gelu(self.fc(x))).astype(jnp.float32)


def loss_fn(model: Any, batch: Any) -> Any:
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def train_step(model: Any, optimizer: Any, batch: Any) -> None:
    grads = nnx.grad(loss_fn)(model, batch)
    optimizer.update(model, grads)


@nnx.jit
def scaled_train_step(model: Any, optimizer: Any, batch: Any) -> None:
    scaled = lambda m, b: loss_fn(m, b) * LOSS_SCALE  # noqa: E731
    grads = nnx.grad(scaled)(model, batch)
    # BUG: the gradients of the scaled loss are applied as they are (they should be
    # divided by LOSS_SCALE first).
    optimizer.update(model, grads)


def case(name: str = "bf16-encoder->head", step: Any = train_step) -> hc.HybridCase:
    return hc.from_nnx(
        name,
        model_fn=lambda rngs: nnx.bridge.lazy_init(Encoder(rngs), jnp.ones((1, 4))),
        loss_fn=loss_fn,
        train_step=step,
        tx=optax.sgd,
        batches=hnp.arrays(
            np.float32, (8, 7), elements={"min_value": -3, "max_value": 3}
        ).map(lambda a: (a[:, :4], a[:, 4:])),
    )


def buggy_case() -> hc.HybridCase:
    return case("bf16-loss-scale-not-undone", scaled_train_step)
