"""Steps that must use their batch, with three optimizers and two frameworks.

* ``adam``: an NNX encoder + Linen head (``bridge.ToNNX``) on Adam. The bug: the
  step trains on a batch captured at module level (the debugging batch left in).
* ``trainstate``: a Linen model holding an NNX block (``bridge.to_linen``) on a
  ``TrainState`` with SGD momentum, integer labels and cross-entropy. The bug: the
  labels are read with ``batch.get("labels", ...)`` while the data's key is
  ``"label"``: the targets default to class 0.
* ``accumulate``: gradient accumulation over two micro-batches, SGD. The bug: the
  loop slices the first micro-batch every time.
"""

from __future__ import annotations

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

N, IN, HID, OUT = 8, 4, 8, 3


def xy() -> st.SearchStrategy[Any]:
    return hnp.arrays(
        np.float32, (N, IN + OUT), elements={"min_value": -3, "max_value": 3}
    ).map(lambda a: (a[:, :IN], a[:, IN:]))


class EncoderHead(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.encoder = nnx.Linear(IN, HID, rngs=rngs)
        self.head = nnx.bridge.ToNNX(nn.Dense(OUT), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.head(nnx.tanh(self.encoder(x)))


def mse_loss(model: Any, batch: Any) -> Any:
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


def _encoder_head(name: str, step: Any, tx: Any) -> hc.HybridCase:
    return hc.from_nnx(
        name,
        model_fn=lambda rngs: nnx.bridge.lazy_init(
            EncoderHead(rngs), jnp.ones((1, IN))
        ),
        loss_fn=mse_loss,
        train_step=step,
        tx=tx,
        batches=xy(),
    )


# -- adam: the debugging batch left in -----------------------------------------

DEBUG_BATCH = tuple(
    np.split(np.random.default_rng(0).normal(size=(N, IN + OUT)), [IN], axis=1)
)


@nnx.jit
def adam_step(model: Any, optimizer: Any, batch: Any) -> None:
    grads = nnx.grad(mse_loss)(model, batch)
    optimizer.update(model, grads)


@nnx.jit
def debug_batch_step(model: Any, optimizer: Any, batch: Any) -> None:
    # BUG: trains on the module-level batch used while debugging, not on `batch`.
    grads = nnx.grad(mse_loss)(model, DEBUG_BATCH)
    optimizer.update(model, grads)


def adam(step: Any = adam_step, name: str = "adam-encoder->head") -> hc.HybridCase:
    return _encoder_head(name, step, lambda lr: optax.adam(lr))


# -- accumulate: gradient accumulation over micro-batches ------------------------

MICRO = 2


def _accumulated(model: Any, batch: Any, first_only: bool) -> Any:
    x, y = batch
    size = x.shape[0] // MICRO
    total = None
    for i in range(MICRO):
        # BUG (first_only): x[0:size] every time, where x[i*size:(i+1)*size] is meant
        part = slice(0, size) if first_only else slice(i * size, (i + 1) * size)
        g = nnx.grad(mse_loss)(model, (x[part], y[part]))
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    return jax.tree.map(lambda t: t / MICRO, total)


@nnx.jit
def accumulate_step(model: Any, optimizer: Any, batch: Any) -> None:
    optimizer.update(model, _accumulated(model, batch, first_only=False))


@nnx.jit
def first_micro_batch_step(model: Any, optimizer: Any, batch: Any) -> None:
    optimizer.update(model, _accumulated(model, batch, first_only=True))


def accumulate(
    step: Any = accumulate_step, name: str = "accumulate-encoder->head"
) -> hc.HybridCase:
    return _encoder_head(name, step, optax.sgd)


# -- trainstate: a Linen model holding an NNX block, momentum ---------------------


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = nnx.bridge.to_linen(nnx.Linear, IN, HID, name="block")(x)
        return nn.Dense(OUT, name="head")(nn.relu(h))


def xent_loss(variables: Any, batch: Any, rngs: Any, key: str = "label") -> Any:
    logits = Classifier().apply(variables, batch["image"])
    labels = batch.get(key, jnp.zeros(batch["image"].shape[0], jnp.int32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _trainstate_step(key: str) -> Any:
    @jax.jit
    def step(state: Any, batch: Any) -> Any:
        loss = lambda p: xent_loss({"params": p}, batch, None, key)  # noqa: E731
        grads = jax.grad(loss)(state.params)
        return state.apply_gradients(grads=grads)

    return step


def trainstate(key: str = "label", name: str = "trainstate-momentum") -> Any:
    return hc.from_linen(
        name,
        module=Classifier(),
        loss_fn=xent_loss,  # the model's loss, as the data spells its keys
        train_step=_trainstate_step(key),
        tx=lambda lr: optax.sgd(lr, momentum=0.9),
        init_args=(jnp.ones((1, IN)),),
        batches=st.fixed_dictionaries(
            {
                "image": hnp.arrays(
                    np.float32, (N, IN), elements={"min_value": -3, "max_value": 3}
                ),
                "label": hnp.arrays(np.int32, (N,), elements=st.integers(0, OUT - 1)),
            }
        ),
    )


TWINS: dict[str, tuple[Any, Any]] = {
    "debug-batch-adam": (adam, lambda: adam(debug_batch_step, "adam-debug-batch")),
    "labels-key-momentum": (
        trainstate,
        lambda: trainstate("labels", "trainstate-labels-key"),
    ),
    "first-micro-batch": (
        accumulate,
        lambda: accumulate(first_micro_batch_step, "accumulate-first-micro-batch"),
    ),
}
"""``{bug: (correct case factory, buggy case factory)}``, caught by step_uses_batch."""


# -- functional: the README's functional form, Adam in a state half, no tx --------


class Encoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc = nnx.Linear(IN, HID, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return jnp.tanh(self.fc(x))


ENCODER, HEAD, ADAM = Encoder(nnx.Rngs(0)), nn.Dense(OUT), optax.adam(1e-2)


def functional_init(key: Any) -> dict[str, Any]:
    k1, k2 = jax.random.split(key)
    params = {
        "nnx": hc.compat.params_as_dict(Encoder(nnx.Rngs(k1))),
        "linen": HEAD.init(k2, jnp.zeros((1, HID))),
    }
    return {**params, "opt": ADAM.init(params)}


def functional_loss(params: Any, batch: Any) -> Any:
    x, y = batch
    code = hc.compat.module_with_params(ENCODER, params["nnx"])(x)
    return jnp.mean((HEAD.apply(params["linen"], code) - y) ** 2)


PREFETCHED = tuple(
    jnp.asarray(a, jnp.float32)
    for a in np.split(np.random.default_rng(1).normal(size=(N, IN + OUT)), [IN], 1)
)


def _functional_step(stale: bool) -> Any:
    def step(params: Any, batch: Any, lr: Any) -> Any:
        # BUG (stale): the prefetch buffer's first batch, not the one given
        used = PREFETCHED if stale else batch
        trainable = {"nnx": params["nnx"], "linen": params["linen"]}
        grads = jax.grad(lambda p: functional_loss(p, used))(trainable)
        updates, opt = optax.adam(lr).update(grads, params["opt"], trainable)
        return {**optax.apply_updates(trainable, updates), "opt": opt}

    return step


def functional(stale: bool = False) -> hc.HybridCase:
    return hc.HybridCase(
        name="functional-adam-stale-batch" if stale else "functional-adam",
        init=functional_init,
        loss=functional_loss,
        batches=xy(),
        step=_functional_step(stale),
        sgd=False,  # no tx declared either: only the step says it is Adam
        non_trainable=("opt",),
    )


TWINS["functional-stale-batch"] = (functional, lambda: functional(stale=True))
