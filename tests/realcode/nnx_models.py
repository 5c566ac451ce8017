"""NNX training code as teams write it, each with a twin holding one realistic bug.

Written from the patterns of Flax's NNX examples and the bridge guide (an NNX model
holding a Linen part in ``bridge.ToNNX``, ``nnx.Optimizer(model, tx, wrt=...)``,
``@nnx.jit`` steps, ``nnx.DiffState`` grad filters, optax schedules), at tiny
shapes. Each ``*_case(bug=...)`` is one ``hc.from_nnx`` call handing hybridcheck
the user's own optimizer construction (``optimizer_fn``), not a ``tx`` to rebuild.

* ``probe``: an NNX encoder + ToNNX head with a linear-probe warmup (the encoder's
  output behind ``stop_gradient`` while a step counter is below ``PROBE_STEPS``).
  Bug: the optimizer's ``wrt`` left at the probe phase's head-only filter.
* ``warmup_cosine``: AdamW on ``warmup_cosine_decay_schedule`` starting at lr 0
  (optax cannot build it from a traced peak lr). Bug: a functional ``jax.jit`` step
  (split/merge, the performance guide's style) that writes back the model's state
  but not the optimizer's: the schedule never leaves step 0.
* ``lora``: LoRA adapters on a frozen encoder, a ToNNX head, gradient accumulation
  over two micro-batches and global-norm clipping, batches from a sampler
  (``batch_fn``). Bug: every micro-batch slices the first rows (the loop variable
  is not used).
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

BATCH, IN, HIDDEN, CLASSES = 4, 4, 8, 3
PROBE_STEPS = 1
"""Steps of the linear probe: the encoder is trained from step PROBE_STEPS + 1."""


def classification_batches() -> st.SearchStrategy[Any]:
    floats = hnp.from_dtype(np.dtype(np.float32), min_value=-2, max_value=2)
    return st.fixed_dictionaries(
        {
            "image": hnp.arrays(np.float32, (BATCH, IN), elements=floats),
            "label": hnp.arrays(
                np.int32, (BATCH,), elements=st.integers(0, CLASSES - 1)
            ),
        }
    )


def cross_entropy(model: Any, batch: Any) -> Any:
    logits = model(batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]
    ).mean()


# -- a linear probe that unfreezes the encoder ---------------------------------------


class Encoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(IN, HIDDEN, rngs=rngs)
        self.fc2 = nnx.Linear(HIDDEN, HIDDEN, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return nnx.gelu(self.fc2(nnx.gelu(self.fc1(x))))


class ProbeClassifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, gate_steps: int = PROBE_STEPS) -> None:
        self.gate_steps = gate_steps
        self.encoder = Encoder(rngs)
        self.head = nnx.bridge.ToNNX(nn.Dense(CLASSES), rngs=rngs)
        self.steps = nnx.Variable(jnp.zeros((), jnp.int32))

    def __call__(self, x: Any) -> Any:
        h = self.encoder(x)
        probing = self.steps[...] < self.gate_steps
        h = jnp.where(probing, jax.lax.stop_gradient(h), h)
        return self.head(h)


@nnx.jit
def probe_train_step(model: Any, optimizer: Any, batch: Any) -> Any:
    diff = nnx.DiffState(0, optimizer.wrt)
    loss, grads = nnx.value_and_grad(cross_entropy, argnums=diff)(model, batch)
    optimizer.update(model, grads)
    model.steps[...] = model.steps[...] + 1
    return loss


def probe_case(bug: bool = False, gate_steps: int = PROBE_STEPS) -> hc.HybridCase:
    # The bug: the probe phase's filter (head only) still in the optimizer.
    # gate_steps: how long the encoder stays behind stop_gradient.
    head_only = nnx.All(nnx.Param, nnx.PathContains("head"))
    wrt = head_only if bug else nnx.Param
    return hc.from_nnx(
        "realcode-probe" + ("-bug" if bug else ""),
        model_fn=lambda rngs: nnx.bridge.lazy_init(
            ProbeClassifier(rngs, gate_steps), jnp.ones((1, IN))
        ),
        loss_fn=cross_entropy,
        train_step=probe_train_step,
        optimizer_fn=lambda model, lr: nnx.Optimizer(model, optax.adam(lr), wrt=wrt),
        batches=classification_batches(),
    )


# -- AdamW on a warmup-cosine schedule -------------------------------------------------


class Classifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.encoder = Encoder(rngs)
        self.head = nnx.bridge.ToNNX(nn.Dense(CLASSES), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.head(self.encoder(x))


def make_optimizer(model: Any, lr: Any) -> Any:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=2, decay_steps=50
    )
    return nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)


@nnx.jit
def adam_train_step(model: Any, optimizer: Any, batch: Any) -> Any:
    loss, grads = nnx.value_and_grad(cross_entropy)(model, batch)
    optimizer.update(model, grads)
    return loss


@jax.jit
def _functional_step(graphdef: Any, state: Any, batch: Any) -> Any:
    model, optimizer = nnx.merge(graphdef, state)
    grads = nnx.grad(cross_entropy)(model, batch)
    optimizer.update(model, grads)
    return nnx.state(model)  # the bug: nnx.state((model, optimizer))


def functional_train_step(model: Any, optimizer: Any, batch: Any) -> None:
    graphdef, state = nnx.split((model, optimizer))
    nnx.update(model, _functional_step(graphdef, state, batch))


def warmup_cosine_case(bug: bool = False) -> hc.HybridCase:
    return hc.from_nnx(
        "realcode-warmup-cosine" + ("-bug" if bug else ""),
        model_fn=lambda rngs: nnx.bridge.lazy_init(Classifier(rngs), jnp.ones((1, IN))),
        loss_fn=cross_entropy,
        train_step=functional_train_step if bug else adam_train_step,
        optimizer_fn=make_optimizer,
        batches=classification_batches(),
    )


# -- LoRA, gradient accumulation and clipping ------------------------------------------

MICRO_BATCHES = 2


class LoraEncoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.LoRALinear(IN, HIDDEN, lora_rank=2, rngs=rngs)
        self.fc2 = nnx.LoRALinear(HIDDEN, HIDDEN, lora_rank=2, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return nnx.relu(self.fc2(nnx.relu(self.fc1(x))))


class LoraClassifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.encoder = LoraEncoder(rngs)
        self.head = nnx.bridge.ToNNX(nn.Dense(CLASSES), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.head(self.encoder(x))


TRAINED = nnx.Any(nnx.LoRAParam, nnx.All(nnx.Param, nnx.PathContains("head")))
"""LoRA adapters and the head: the encoder's base weights stay frozen."""


def lora_optimizer(model: Any, lr: Any) -> Any:
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    return nnx.Optimizer(model, tx, wrt=TRAINED)


def _accumulate(sliced: Any) -> Any:
    @nnx.jit
    def train_step(model: Any, optimizer: Any, batch: Any) -> None:
        diff = nnx.DiffState(0, optimizer.wrt)
        grads = None
        for i in range(MICRO_BATCHES):
            micro = jax.tree.map(lambda a, i=i: sliced(a, i), batch)
            g = nnx.grad(cross_entropy, argnums=diff)(model, micro)
            grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
        optimizer.update(model, jax.tree.map(lambda g: g / MICRO_BATCHES, grads))

    return train_step


_SIZE = BATCH // MICRO_BATCHES
lora_train_step = _accumulate(lambda a, i: a[i * _SIZE : (i + 1) * _SIZE])
lora_train_step_bug = _accumulate(lambda a, i: a[:_SIZE])  # i unused


def _lora_frozen(half: str, path: str) -> bool:
    return half == "nnx" and "lora" not in path


def token_batch(key: Any) -> Any:  # a fine-tuning set's sampler
    k_image, k_label = jax.random.split(key)
    return {
        "image": jax.random.normal(k_image, (BATCH, IN)),
        "label": jax.random.randint(k_label, (BATCH,), 0, CLASSES),
    }


def lora_case(bug: bool = False) -> hc.HybridCase:
    return hc.from_nnx(
        "realcode-lora-accumulation" + ("-bug" if bug else ""),
        model_fn=lambda rngs: nnx.bridge.lazy_init(
            LoraClassifier(rngs), jnp.ones((1, IN))
        ),
        loss_fn=cross_entropy,
        train_step=lora_train_step_bug if bug else lora_train_step,
        optimizer_fn=lora_optimizer,
        batches=token_batch,
        frozen=_lora_frozen,
    )
