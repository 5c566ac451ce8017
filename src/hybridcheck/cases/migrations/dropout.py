"""An MLP with Dropout, Linen -> NNX: the two consume the dropout key differently.

Linen's ``nn.Dropout`` draws from ``make_rng('dropout')`` (the key folded with the
module path); ``nnx.Dropout`` draws from its ``Rngs`` stream. Given the same key the
two masks differ, so the stochastic losses differ although the migration is exact:
the comparison is made with the layers deterministic (``before_eval`` /
``after_eval``), and the report says so.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from hybridcheck import compat
from hybridcheck.cases.migrations._shared import D, W, mse, vector_batches
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase

RATE = 0.5
_KEY = 0  # the dropout key both sides are given


class LinenDrop(nn.Module):
    @nn.compact
    def __call__(self, x: Any, train: bool) -> Any:
        h = nn.gelu(nn.Dense(W, name="fc1")(x))
        h = nn.Dropout(RATE, deterministic=not train)(h)
        return nn.Dense(D, name="fc2")(h)


class NnxDrop(nnx.Module):
    def __init__(self, rngs: Any, rate: float = RATE) -> None:
        self.fc1 = nnx.Linear(D, W, rngs=rngs)
        self.drop = nnx.Dropout(rate)
        self.fc2 = nnx.Linear(W, D, rngs=rngs)

    def __call__(self, x: Any, *, train: bool) -> Any:
        h = nn.gelu(self.fc1(x))
        # Rngs made here, inside the differentiated function (see COMPAT facts).
        rngs = nnx.Rngs(dropout=jax.random.PRNGKey(_KEY))
        return self.fc2(self.drop(h, deterministic=not train, rngs=rngs))


_DROP = LinenDrop()


def _linen_loss(train: bool) -> Any:
    def loss(p: Any, b: Any) -> Any:
        rngs = {"dropout": jax.random.PRNGKey(_KEY)} if train else {}
        return mse(_DROP.apply(p["linen"], b[0], train, rngs=rngs), b[1])

    return loss


def _linen(train: bool) -> HybridCase:
    return HybridCase(
        name="linen-dropout" if train else "linen-dropout-eval",
        init=lambda key: {"linen": _DROP.init(key, jnp.zeros((1, D)), False)},
        loss=_linen_loss(train),
        batches=vector_batches(),
    )


LINEN_DROP, LINEN_DROP_EVAL = _linen(True), _linen(False)


def nnx_drop(train: bool, *, eval_drops: bool = False) -> HybridCase:
    """The NNX side; ``eval_drops`` is the bug of an eval path that still drops
    (the train/eval flag not passed through to ``nnx.Dropout``)."""
    template = NnxDrop(nnx.Rngs(0))

    def loss(p: Any, b: Any) -> Any:
        model = compat.module_with_params(template, p["nnx"])
        return mse(model(b[0], train=train or eval_drops), b[1])

    return HybridCase(
        name="nnx-dropout" if train else "nnx-dropout-eval",
        init=lambda key: {"nnx": compat.params_as_dict(NnxDrop(nnx.Rngs(key)))},
        loss=loss,
        batches=vector_batches(),
    )


def drop_to_nnx(p: Any) -> Any:
    v = p["linen"]["params"]
    return {"nnx": {"fc1": dict(v["fc1"]), "fc2": dict(v["fc2"])}}


def nnx_to_drop(p: Any) -> Any:
    v = p["nnx"]
    return {"linen": {"params": {"fc1": dict(v["fc1"]), "fc2": dict(v["fc2"])}}}
