"""The guide's Linen families: a Linen module holding NNX parts via ``bridge.to_linen``.

Each is written as a user would: the model, the loss, the user's own ``TrainState``
train step and one ``from_linen`` call.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state

from hybridcheck.cases.guide.common import HID, IN, OUT, mse, xy, xy_rng
from hybridcheck.cases.guide.layers import NNXDot, NNXMultiCollections
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.flaxmodels.functionalize import from_linen

# -- to_linen_dot: a Linen module holding bridge.to_linen(NNXDot) ------------------


class ToLinenDot(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        dot = nnx.bridge.to_linen(NNXDot, x.shape[-1], OUT, name="dot")
        b = self.param("b", nn.initializers.lecun_normal(), (1, OUT))
        return dot(x) + b


def dot_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    return mse(ToLinenDot().apply(variables, batch[0]), batch[1])


@jax.jit
def dot_train_step(state: Any, batch: Any) -> Any:
    loss = lambda p: dot_loss({"params": p}, batch, None)  # noqa: E731
    value, grads = jax.value_and_grad(loss)(state.params)
    return state.apply_gradients(grads=grads), {"loss": value}


def to_linen_dot(
    name: str = "guide-to_linen_dot", train_step: Any = dot_train_step
) -> HybridCase:
    return from_linen(
        name,
        module=ToLinenDot(),
        loss_fn=dot_loss,
        train_step=train_step,
        tx=lambda lr: optax.adam(lr),
        init_args=(jnp.ones((1, IN)),),
        batches=xy(),
        description="Linen module holding bridge.to_linen(NNXDot); Adam",
    )


# -- linen_dropout_bn: to_linen(nnx.BatchNorm / nnx.Dropout) in Linen ----------------


class LinenDropoutBN(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = nn.Dense(HID, name="fc")(x)
        h = nnx.bridge.to_linen(nnx.BatchNorm, HID, name="bn")(h)
        h = nnx.bridge.to_linen(nnx.Dropout, 0.5, name="drop")(jax.nn.relu(h))
        return nn.Dense(OUT, name="head")(h)


def bn_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    out, updates = LinenDropoutBN().apply(
        variables, batch["x"], rngs=rngs, mutable=["batch_stats"]
    )
    return mse(out, batch["y"]), updates


class BNState(train_state.TrainState):
    batch_stats: Any


def linen_bn_train_step(loss_fn: Any) -> Any:
    """linen_dropout_bn's train step around ``loss_fn`` (a bug may swap the loss)."""

    @jax.jit
    def train_step(state: Any, batch: Any) -> Any:
        def loss(params: Any) -> Any:
            variables = {"params": params, "batch_stats": state.batch_stats}
            return loss_fn(variables, batch, {"dropout": batch["rng"]})

        grads, updates = jax.grad(loss, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads)
        return state.replace(batch_stats=updates["batch_stats"])

    return train_step


bn_train_step = linen_bn_train_step(bn_loss)


def linen_dropout_bn(
    name: str = "guide-linen_dropout_bn",
    loss_fn: Any = bn_loss,
    train_step: Any = bn_train_step,
    **changes: Any,
) -> HybridCase:
    return from_linen(
        name,
        module=LinenDropoutBN(),
        loss_fn=loss_fn,
        train_step=train_step,
        tx=optax.sgd,
        init_args=(jnp.ones((2, IN)),),
        batches=xy_rng(),
        train_state=changes.pop("train_state", BNState),
        rngs=lambda batch: {"dropout": batch["rng"]},
        reseed=lambda params, batch, key: (params, {**batch, "rng": key}),
        description="to_linen(nnx.BatchNorm / nnx.Dropout) in Linen; SGD",
        **changes,
    )


# -- to_linen_multi: the guide's Param + LoRA + Count module via to_linen -----------


class MultiModel(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = nnx.bridge.to_linen(NNXMultiCollections, IN, HID, name="multi")(x)
        return nn.Dense(OUT, name="head")(jnp.tanh(h))


def multi_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    out, updates = MultiModel().apply(variables, batch[0], mutable=["Count"])
    return mse(out, batch[1]), updates


class CountsState(train_state.TrainState):
    Count: Any


@jax.jit
def multi_train_step(state: Any, batch: Any) -> Any:
    def loss(trainable: Any) -> Any:  # LoRAParam is a collection of its own
        return multi_loss({**trainable, "Count": state.Count}, batch, None)

    grads, updates = jax.grad(loss, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads).replace(Count=updates["Count"])


def to_linen_multi() -> HybridCase:
    def make_state(v: Any, tx: Any) -> Any:
        trainable = {"params": v["params"], "LoRAParam": v["LoRAParam"]}
        return CountsState.create(
            apply_fn=MultiModel().apply, params=trainable, tx=tx, Count=v["Count"]
        )

    return from_linen(
        "guide-to_linen_multi",
        module=MultiModel(),
        loss_fn=multi_loss,
        train_step=multi_train_step,
        tx=optax.sgd,
        init_args=(jnp.ones((1, IN)),),
        batches=xy(),
        make_state=make_state,
        read_state=lambda state: {**state.params, "Count": state.Count},
        description="the guide's Param + LoRA + Count NNX module via to_linen; SGD",
    )
