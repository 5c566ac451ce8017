"""What every guide family shares: shapes, batches, the MSE loss and the NNX train step.

Shapes are tiny and every batch has one shape (one compilation per function).
``TO_NNX_MUTABLE`` and ``TO_LINEN_APPLY`` are the Flax releases the guide's code
needs beyond the bridge's 0.9.0 (see the package doc).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from hypothesis import strategies as st

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.describe import strategies as hst

N, IN, HID, OUT = 4, 3, 4, 2
TO_NNX_MUTABLE = (0, 12, 0)  # ToNNX(...)(x, mutable=...) inside lazy_init
TO_LINEN_APPLY = (0, 11, 0)  # apply / jit / Optimizer(wrt=) of to_linen models


def xy() -> st.SearchStrategy[Any]:
    return st.tuples(
        hst.bounded_arrays((N, IN), max_magnitude=2.0),
        hst.bounded_arrays((N, OUT), max_magnitude=2.0),
    )


def xy_rng() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {
            "x": hst.bounded_arrays((N, IN), max_magnitude=2.0),
            "y": hst.bounded_arrays((N, OUT), max_magnitude=2.0),
            "rng": hst.seeds().map(jax.random.PRNGKey),
        }
    )


def mse(pred: Any, y: Any) -> Any:
    return jnp.mean((pred - y) ** 2)


def xy_loss(model: Any, batch: Any) -> Any:
    return mse(model(batch[0]), batch[1])


def nnx_train_step(loss_fn: Any) -> Any:
    """The NNX training step as the guide and the tutorials write it."""

    @nnx.jit
    def train_step(model: Any, optimizer: Any, batch: Any) -> None:
        grads = nnx.grad(loss_fn)(model, batch)
        compat.optimizer_update(optimizer, model, grads)

    return train_step
