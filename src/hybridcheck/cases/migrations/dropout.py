"""An MLP with Dropout, Linen -> NNX: the two consume the dropout key differently.

Linen's ``nn.Dropout`` draws from ``make_rng('dropout')`` (the key folded with the
module path); ``nnx.Dropout`` draws from its ``Rngs`` stream. Given the same key the
two masks differ, so the stochastic losses differ although the migration is exact:
the loss, gradient and step are compared with the layers deterministic
(``before_eval`` / ``after_eval``), and the training losses over many keys are
compared in distribution (``loss_distribution_matches_before``). The key travels in
the batch, ``(x, y, key)``; each side's ``reseed`` puts another one there.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from hypothesis import strategies as st

from hybridcheck import compat
from hybridcheck.cases.case_mutants import CaseMutant
from hybridcheck.cases.migrations._shared import D, W, mse, vector_batches
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.migration_case import MigrationCase

RATE = 0.5
PLACES = ("hidden", "input")
"""Where the NNX side drops: after the hidden activation (as the original), or on
the input (the bug of a dropout moved to another place)."""


@st.composite
def dropout_batches(draw: st.DrawFn) -> tuple[Any, Any, np.ndarray]:
    """``(x, y, key)``: the MLP's batch and the dropout key (raw ``uint32[2]``)."""
    x, y = draw(vector_batches())
    seed = draw(st.integers(0, 2**31 - 1))
    return x, y, np.asarray(jax.random.PRNGKey(seed))


def reseed(params: Any, batch: Any, key: Any) -> tuple[Any, Any]:
    """The same example with another dropout key."""
    return params, (batch[0], batch[1], key)


class LinenDrop(nn.Module):
    @nn.compact
    def __call__(self, x: Any, train: bool) -> Any:
        h = nn.gelu(nn.Dense(W, name="fc1")(x))
        h = nn.Dropout(RATE, deterministic=not train)(h)
        return nn.Dense(D, name="fc2")(h)


class NnxDrop(nnx.Module):
    def __init__(self, rngs: Any, rate: float = RATE, where: str = "hidden") -> None:
        self.fc1 = nnx.Linear(D, W, rngs=rngs)
        self.drop = nnx.Dropout(rate)
        self.fc2 = nnx.Linear(W, D, rngs=rngs)
        self.where = where

    def __call__(self, x: Any, key: Any, *, train: bool) -> Any:
        # Rngs made here, inside the differentiated function (see COMPAT facts).
        rngs = nnx.Rngs(dropout=key)
        if self.where == "input":
            x = self.drop(x, deterministic=not train, rngs=rngs)
        h = nn.gelu(self.fc1(x))
        if self.where == "hidden":
            h = self.drop(h, deterministic=not train, rngs=rngs)
        return self.fc2(h)


_DROP = LinenDrop()


def _linen_loss(train: bool) -> Any:
    def loss(p: Any, b: Any) -> Any:
        rngs = {"dropout": b[2]} if train else {}
        return mse(_DROP.apply(p["linen"], b[0], train, rngs=rngs), b[1])

    return loss


def _linen(train: bool) -> HybridCase:
    return HybridCase(
        name="linen-dropout" if train else "linen-dropout-eval",
        init=lambda key: {"linen": _DROP.init(key, jnp.zeros((1, D)), False)},
        loss=_linen_loss(train),
        batches=dropout_batches(),
        reseed=reseed if train else None,
    )


LINEN_DROP, LINEN_DROP_EVAL = _linen(True), _linen(False)


def nnx_drop(
    train: bool, *, eval_drops: bool = False, rate: float = RATE, where: str = "hidden"
) -> HybridCase:
    """The NNX side. Bugs: ``eval_drops``, an eval path that still drops (the
    train/eval flag not passed through to ``nnx.Dropout``); ``rate`` other than
    the original's; ``where="input"``, the dropout moved before the first layer."""
    if where not in PLACES:
        raise ValueError(f"nnx_drop: where must be one of {PLACES}, got {where!r}")
    template = NnxDrop(nnx.Rngs(0), rate, where)

    def loss(p: Any, b: Any) -> Any:
        model = compat.module_with_params(template, p["nnx"])
        return mse(model(b[0], b[2], train=train or eval_drops), b[1])

    return HybridCase(
        name="nnx-dropout" if train else "nnx-dropout-eval",
        init=lambda key: {"nnx": compat.params_as_dict(NnxDrop(nnx.Rngs(key)))},
        loss=loss,
        batches=dropout_batches(),
        reseed=reseed if train or eval_drops else None,
    )


def drop_to_nnx(p: Any) -> Any:
    v = p["linen"]["params"]
    return {"nnx": {"fc1": dict(v["fc1"]), "fc2": dict(v["fc2"])}}


def nnx_to_drop(p: Any) -> Any:
    v = p["nnx"]
    return {"linen": {"params": {"fc1": dict(v["fc1"]), "fc2": dict(v["fc2"])}}}


def dropout_migration(
    name: str,
    *,
    eval_drops: bool = False,
    rate: float = RATE,
    where: str = "hidden",
    description: str = "Dense/Dropout MLP, Linen -> NNX",
) -> MigrationCase:
    """The migration, exact by default; the keywords are the NNX side's bugs
    (see :func:`nnx_drop`)."""
    return MigrationCase(
        name,
        LINEN_DROP,
        nnx_drop(True, rate=rate, where=where),
        drop_to_nnx,
        nnx_to_drop,
        description=description,
        before_eval=LINEN_DROP_EVAL,
        after_eval=nnx_drop(False, eval_drops=eval_drops),
    )


def dropout_mutants() -> list[CaseMutant]:
    """Stochastic migration bugs: each leaves the deterministic model exact."""
    return [
        CaseMutant(
            "dropout-in-eval",
            lambda: dropout_migration("mig-dropout-eval", eval_drops=True),
            "loss_matches_before",
            "the train/eval flag not passed to nnx.Dropout: eval still drops",
        ),
        CaseMutant(
            "dropout-rate",
            lambda: dropout_migration("mig-dropout-rate", rate=0.1),
            "loss_distribution_matches_before",
            "Dropout rate 0.5 -> 0.1 in the NNX model",
        ),
        CaseMutant(
            "dropout-moved",
            lambda: dropout_migration("mig-dropout-moved", where="input"),
            "loss_distribution_matches_before",
            "Dropout moved from the hidden activation to the input",
        ),
        CaseMutant(
            "dropout-dropped",
            lambda: dropout_migration("mig-dropout-dropped", rate=0.0),
            "loss_distribution_matches_before",
            "Dropout left out of the NNX model (rate 0)",
        ),
    ]
