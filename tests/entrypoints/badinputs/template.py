"""The user's case file every bad-input row starts from, and how a row bends it.

One correct, tiny hybrid case (an ``nnx.Linear(2, 3)`` encoder feeding a Linen
``nn.Dense(1)`` head, the README's functional form), written out as a standalone
Python file so the CLI imports it as a user's file. A row replaces one hook: a line
run at import (``prelude``), at the top of ``my_init``/``my_loss``/``my_step``, the
expression each returns, a tail on the batches strategy, or code after ``CASE``
(``epilogue``). Hooks inside functions are single lines (``;`` chains them).

Every call of ``my_loss`` and ``my_step`` appends a line to the file named by
``$BADINPUT_SENTINEL``, so a row can prove that no case ran (a bad option or output
path must be refused before any user code runs).

The same file also holds the NNX model of ``hc.from_nnx`` (``model_fn``,
``nnx_loss``, ``nnx_step``) for the Python-API rows.
"""

from __future__ import annotations

import string

TEMPLATE = string.Template(
    '''\
"""A bad-input row's case file (generated from tests/entrypoints/badinputs)."""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hybridcheck as hc

${prelude}


def _ran(where):
    sentinel = os.environ.get("BADINPUT_SENTINEL")
    if sentinel:
        with open(sentinel, "a") as f:
            f.write(where + "\\n")


class Encoder(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(2, 3, rngs=rngs)

    def __call__(self, x):
        return jax.nn.gelu(self.fc(x))


ENCODER = Encoder(nnx.Rngs(0))
HEAD = nn.Dense(1)


def my_init(key):
    k1, k2 = jax.random.split(key)
    params = {
        "nnx": hc.compat.params_as_dict(Encoder(nnx.Rngs(k1))),
        "linen": HEAD.init(k2, jnp.zeros((1, 3))),
    }
    ${init_hook}
    return ${init_return}


def my_loss(params, batch):
    _ran("loss")
    ${loss_hook}
    x, y = batch
    code = hc.compat.module_with_params(ENCODER, params["nnx"])(x)
    value = jnp.mean((HEAD.apply(params["linen"], code) - y) ** 2)
    return ${loss_return}


def my_step(params, batch, lr):
    _ran("step")
    ${step_hook}
    grads = jax.grad(my_loss)(params, batch)
    new = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    return ${step_return}


BATCHES = hnp.arrays(
    np.float32,
    (4, 3),
    elements=hnp.from_dtype(np.dtype(np.float32), min_value=-3, max_value=3),
).map(lambda a: (a[:, :2], a[:, 2:]))${batches_tail}

KWARGS = dict(
    name="tiny", init=my_init, loss=my_loss, batches=BATCHES, step=my_step, sgd=True
)
CASE = hc.HybridCase(**KWARGS)


class Model(nnx.Module):  # the from_nnx form of the same model
    def __init__(self, rngs):
        self.encoder = nnx.Linear(2, 3, rngs=rngs)
        self.head = nnx.bridge.ToNNX(nn.Dense(1), rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.gelu(self.encoder(x)))


def model_fn(rngs):
    return nnx.bridge.lazy_init(Model(rngs), jnp.ones((1, 2)))


def nnx_loss(model, batch):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def nnx_step(model, optimizer, batch):
    grads = nnx.grad(nnx_loss)(model, batch)
    optimizer.update(model, grads)


NNX_KWARGS = dict(
    model_fn=model_fn,
    loss_fn=nnx_loss,
    train_step=nnx_step,
    tx=optax.sgd,
    batches=BATCHES,
)

${epilogue}
'''
)

DEFAULTS = {
    "prelude": "",
    "init_hook": "pass",
    "init_return": "params",
    "loss_hook": "pass",
    "loss_return": "value",
    "step_hook": "pass",
    "step_return": "new",
    "batches_tail": "",
    "epilogue": "",
}


def render(**hooks: str) -> str:
    """The case file's source with ``hooks`` in place of the defaults."""
    unknown = set(hooks) - set(DEFAULTS)
    if unknown:
        raise KeyError(f"unknown hooks {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    return TEMPLATE.substitute({**DEFAULTS, **hooks})


def line_of(source: str, text: str) -> int:
    """1-based number of the first line of ``source`` that contains ``text``."""
    for number, line in enumerate(source.splitlines(), start=1):
        if text in line:
            return number
    raise ValueError(f"{text!r} is not in the rendered case file")
