"""Case (b): an NNX MLP encoder feeding a Linen head, trained with optax Adam."""

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
from hybridcheck.describe import strategies as hst
from hybridcheck.describe.hybrid_case import HybridCase

IN, HIDDEN, CODE, CLASSES = 4, 16, 8, 3


class Encoder(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.fc1 = nnx.Linear(IN, HIDDEN, rngs=rngs)
        self.fc2 = nnx.Linear(HIDDEN, CODE, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return jax.nn.gelu(self.fc2(jax.nn.gelu(self.fc1(x))))


_ENCODER = Encoder(nnx.Rngs(0))  # structure only; parameters come in as a dict
_HEAD = nn.Dense(CLASSES)


def init(key: jax.Array) -> dict[str, Any]:
    k_enc, k_head = jax.random.split(key)
    encoder = Encoder(nnx.Rngs(k_enc))
    return {
        "nnx": compat.params_as_dict(encoder),
        "linen": _HEAD.init(k_head, jnp.zeros((1, CODE))),
    }


def loss(params: dict[str, Any], batch: Any) -> Any:
    x, labels = batch
    code = compat.module_with_params(_ENCODER, params["nnx"])(x)
    logits = _HEAD.apply(params["linen"], code)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def adam_step(params: Any, batch: Any, lr: Any) -> Any:
    """A user's optax step (first Adam step from a fresh state)."""
    tx = optax.adam(lr)
    grads = jax.grad(loss)(params, batch)
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)


@st.composite
def batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.sampled_from([4, 8]))
    x = draw(hst.bounded_arrays((n, IN), max_magnitude=5.0))
    labels = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, CLASSES - 1)))
    return x, labels


CASE = HybridCase(
    name="nnx-mlp->linen-head",
    init=init,
    loss=loss,
    batches=batches(),
    step=adam_step,
    sgd=False,
    description="NNX 2-layer GELU MLP encoder -> Linen Dense classifier, optax Adam",
)
