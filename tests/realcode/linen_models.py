"""Linen training code on a ``TrainState``, as teams write it, each with a buggy twin.

Written from the patterns of Flax's ImageNet example (``train.py``: a ``TrainState``
subclass with ``batch_stats``, ``create_learning_rate_fn`` warming up linearly from
0 then cosine decay, SGD with Nesterov momentum, weight decay added to the loss,
``apply(..., mutable=['batch_stats'])`` and ``apply_gradients(grads=...,
batch_stats=...)``; a zero-initialised scale on each residual block's last
BatchNorm) and of the bridge guide (``bridge.to_linen`` inside a Linen module), at
tiny shapes. Each ``*_case(bug=...)`` hands hybridcheck the user's own
``TrainState.create`` call (``train_state_fn``).

* ``resnet``: the ImageNet ResNet with its stem and head moved to NNX
  (``to_linen(nnx.Conv)``, ``to_linen(nnx.Linear)``). Bug: ``apply_gradients``
  without ``batch_stats``: the statistics are never updated.
* ``dropout_bn``: a Linen top (Dense, BatchNorm, Dropout) around a migrated NNX
  block in ``to_linen``, SGD momentum, the dropout key in the batch. Bug: the step
  hard-codes the dropout key (``PRNGKey(0)``, copied from the init code).

Batches come from a key (``batch_fn``): normal images, random labels, as a data
pipeline's sampler gives them.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import nnx
from flax.nnx import bridge
from flax.training import train_state

import hybridcheck as hc

BATCH, SIZE, CHANNELS, FILTERS, CLASSES = 4, 4, 3, 4, 3
WEIGHT_DECAY = 1e-4
HIDDEN, FEATURES = 8, 5


class TrainState(train_state.TrainState):
    batch_stats: Any


def cross_entropy_loss(logits: Any, labels: Any) -> Any:
    one_hot = jax.nn.one_hot(labels, CLASSES)
    return jnp.mean(optax.softmax_cross_entropy(logits, one_hot))


# -- the ImageNet ResNet, stem and head in NNX -------------------------------------


class ResNetBlock(nn.Module):
    filters: int

    @nn.compact
    def __call__(self, x: Any, train: bool = True) -> Any:
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5
        )
        residual = x
        y = nn.Conv(self.filters, (3, 3), use_bias=False)(x)
        y = norm()(y)
        y = nn.relu(y)
        y = nn.Conv(self.filters, (3, 3), use_bias=False)(y)
        y = norm(scale_init=nn.initializers.zeros_init())(y)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x: Any, train: bool = True) -> Any:
        x = bridge.to_linen(
            nnx.Conv, CHANNELS, FILTERS, kernel_size=(3, 3), use_bias=False, name="stem"
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn_init")(x)
        x = nn.relu(x)
        x = ResNetBlock(FILTERS)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return bridge.to_linen(nnx.Linear, FILTERS, CLASSES, name="head")(x)


RESNET = ResNet()


def create_learning_rate_fn(base_learning_rate: Any) -> Any:
    warmup_steps, total_steps = 2, 50
    warmup_fn = optax.linear_schedule(
        init_value=0.0, end_value=base_learning_rate, transition_steps=warmup_steps
    )
    cosine_fn = optax.cosine_decay_schedule(
        init_value=base_learning_rate, decay_steps=total_steps - warmup_steps
    )
    return optax.join_schedules([warmup_fn, cosine_fn], boundaries=[warmup_steps])


def create_train_state(variables: Any, lr: Any) -> TrainState:
    tx = optax.sgd(create_learning_rate_fn(lr), momentum=0.9, nesterov=True)
    return TrainState.create(
        apply_fn=RESNET.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables["batch_stats"],
    )


def resnet_loss(params: Any, batch_stats: Any, batch: Any) -> Any:
    logits, new_model_state = RESNET.apply(
        {"params": params, "batch_stats": batch_stats},
        batch["image"],
        mutable=["batch_stats"],
    )
    loss = cross_entropy_loss(logits, batch["label"])
    weight_penalty_params = jax.tree_util.tree_leaves(params)
    weight_l2 = sum(jnp.sum(x**2) for x in weight_penalty_params if x.ndim > 1)
    return loss + WEIGHT_DECAY * 0.5 * weight_l2, new_model_state


def _resnet_step(keep_stats: bool) -> Any:
    @jax.jit
    def train_step(state: TrainState, batch: Any) -> Any:
        def loss_fn(params: Any) -> Any:
            return resnet_loss(params, state.batch_stats, batch)

        (loss, new_model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        if keep_stats:
            state = state.apply_gradients(
                grads=grads, batch_stats=new_model_state["batch_stats"]
            )
        else:  # the bug
            state = state.apply_gradients(grads=grads)
        return state, {"loss": loss}

    return train_step


def image_batch(key: Any) -> Any:
    k_image, k_label = jax.random.split(key)
    return {
        "image": jax.random.normal(k_image, (BATCH, SIZE, SIZE, CHANNELS)),
        "label": jax.random.randint(k_label, (BATCH,), 0, CLASSES),
    }


def resnet_case(bug: bool = False) -> hc.HybridCase:
    return hc.from_linen(
        "realcode-resnet" + ("-bug" if bug else ""),
        module=RESNET,
        loss_fn=lambda variables, batch, rngs: resnet_loss(
            variables["params"], variables["batch_stats"], batch
        ),
        train_step=_resnet_step(keep_stats=not bug),
        train_state_fn=create_train_state,
        init_args=(jnp.ones((1, SIZE, SIZE, CHANNELS)),),
        batches=image_batch,
    )


# -- a Linen top around a migrated NNX block ---------------------------------------


class NnxBlock(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(din, dout, rngs=rngs)
        self.norm = nnx.LayerNorm(dout, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return nnx.gelu(self.norm(self.linear(x)))


class Model(nn.Module):
    @nn.compact
    def __call__(self, x: Any, train: bool) -> Any:
        x = nn.Dense(HIDDEN)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        x = bridge.to_linen(NnxBlock, HIDDEN, HIDDEN, name="block")(x)
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(CLASSES)(x)


MODEL = Model()


def model_loss(params: Any, batch_stats: Any, batch: Any, dropout_key: Any) -> Any:
    logits, updates = MODEL.apply(
        {"params": params, "batch_stats": batch_stats},
        batch["x"],
        train=True,
        rngs={"dropout": dropout_key},
        mutable=["batch_stats"],
    )
    return cross_entropy_loss(logits, batch["label"]), updates


def _dropout_step(constant_key: bool) -> Any:
    @jax.jit
    def train_step(state: TrainState, batch: Any) -> Any:
        key = jax.random.PRNGKey(0) if constant_key else batch["rng"]

        def loss_fn(params: Any) -> Any:
            return model_loss(params, state.batch_stats, batch, key)

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
        return state, loss

    return train_step


def feature_batch(key: Any) -> Any:
    k_x, k_label, k_rng = jax.random.split(key, 3)
    return {
        "x": jax.random.normal(k_x, (BATCH, FEATURES)),
        "label": jax.random.randint(k_label, (BATCH,), 0, CLASSES),
        "rng": k_rng,
    }


def dropout_bn_case(bug: bool = False) -> hc.HybridCase:
    return hc.from_linen(
        "realcode-dropout-bn" + ("-bug" if bug else ""),
        module=MODEL,
        loss_fn=lambda variables, batch, rngs: model_loss(
            variables["params"], variables["batch_stats"], batch, rngs["dropout"]
        ),
        train_step=_dropout_step(constant_key=bug),
        train_state_fn=lambda variables, lr: TrainState.create(
            apply_fn=MODEL.apply,
            params=variables["params"],
            tx=optax.sgd(lr, momentum=0.9),
            batch_stats=variables["batch_stats"],
        ),
        init_args=(jnp.ones((1, FEATURES)),),
        init_kwargs={"train": False},
        batches=feature_batch,
        rngs=lambda batch: {"dropout": batch["rng"]},
        reseed=lambda params, batch, key: (params, {**batch, "rng": key}),
    )
