"""The model families of Flax's bridge guide as built-in cases, and real bugs in them.

The guide ("Use Flax NNX and Linen together") is transcribed family by family, each
written as a user would: the model, the loss, the user's own train step and one
``from_nnx``/``from_linen`` call (:func:`user_code_lines` counts them; the guide's
own layers ``LinenDot``, ``NNXDot``, ``LinenMultiCollections`` and
``NNXMultiCollections`` are not counted). Shapes are tiny and every batch has one
shape (one compilation per function).

:func:`mutants` are the bugs users write in the same models, each with the invariant
that names it.

Releases (measured on Flax 0.10.2, 0.11.2, 0.12.8; the bridge exists from 0.9.0):

* Flax < 0.12: ``ToNNX(...)(x, mutable=[...])`` inside ``bridge.lazy_init`` raises
  ``ScopeCollectionNotFound`` (``mutable`` reaches ``init_with_output``): the
  families that call ToNNX with ``mutable`` (``nnx_dropout_bn``, ``counter``) need
  0.12.
* Flax < 0.11: ``apply`` of a ``to_linen`` module needs ToLinen's ``'nnx'``
  collection ("GraphDef not found in variables"), ``to_linen(nnx.Dropout)`` fails
  under ``jax.jit`` and ``nnx.Optimizer`` has no ``wrt``: the ``to_linen`` families
  (``to_linen_dot``, ``linen_dropout_bn``, ``to_linen_multi``) need 0.11.
"""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state
from hypothesis import strategies as st

from hybridcheck import compat
from hybridcheck import strategies as hst
from hybridcheck.case import HybridCase
from hybridcheck.compat import nnx
from hybridcheck.functionalize import from_linen, from_nnx
from hybridcheck.mutants import CaseMutant

__all__ = ["FAMILIES", "cases", "mutants", "user_code_lines"]

N, IN, HID, OUT = 4, 3, 4, 2
TO_NNX_MUTABLE = (0, 12, 0)  # ToNNX(...)(x, mutable=...) inside lazy_init
TO_LINEN_APPLY = (0, 11, 0)  # apply / jit / Optimizer(wrt=) of to_linen models


def _xy() -> st.SearchStrategy[Any]:
    return st.tuples(
        hst.bounded_arrays((N, IN), max_magnitude=2.0),
        hst.bounded_arrays((N, OUT), max_magnitude=2.0),
    )


def _xy_rng() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {
            "x": hst.bounded_arrays((N, IN), max_magnitude=2.0),
            "y": hst.bounded_arrays((N, OUT), max_magnitude=2.0),
            "rng": hst.seeds().map(jax.random.PRNGKey),
        }
    )


def _mse(pred: Any, y: Any) -> Any:
    return jnp.mean((pred - y) ** 2)


def _xy_loss(model: Any, batch: Any) -> Any:
    return _mse(model(batch[0]), batch[1])


def nnx_train_step(loss_fn: Any) -> Any:
    """The NNX training step as the guide and the tutorials write it."""

    @nnx.jit
    def train_step(model: Any, optimizer: Any, batch: Any) -> None:
        grads = nnx.grad(loss_fn)(model, batch)
        compat.optimizer_update(optimizer, model, grads)

    return train_step


# -- the guide's layers ----------------------------------------------------------


class LinenDot(nn.Module):
    out_dim: int

    @nn.compact
    def __call__(self, x: Any) -> Any:
        w = self.param("w", nn.initializers.lecun_normal(), (x.shape[-1], self.out_dim))
        return x @ w


class NNXDot(nnx.Module):
    def __init__(self, din: int, dout: int, rngs: Any) -> None:
        self.w = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (din, dout)))

    def __call__(self, x: Any) -> Any:
        return x @ self.w


class LinenMultiCollections(nn.Module):
    out_dim: int

    @nn.compact
    def __call__(self, x: Any) -> Any:
        w = self.param("w", nn.initializers.lecun_normal(), (x.shape[-1], self.out_dim))
        b = self.param("b", nn.zeros_init(), (1, self.out_dim))
        count = self.variable("counter", "count", lambda: jnp.zeros((), jnp.int32))
        if not self.is_initializing():
            count.value += 1
        y = x @ w + b
        self.sow("intermediates", "dot_sum", jnp.sum(y))
        return y


class Count(nnx.Variable):  # to_linen names its collection after the class
    pass


class NNXMultiCollections(nnx.Module):
    def __init__(self, din: int, dout: int, rngs: Any) -> None:
        self.w = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (din, dout)))
        self.lora = nnx.LoRA(din, 2, dout, rngs=rngs)
        self.count = Count(jnp.array(0))

    def __call__(self, x: Any) -> Any:
        self.count[...] += 1
        return x @ self.w + self.lora(x)


# -- to_nnx_dot: an NNX module holding bridge.ToNNX(LinenDot) ----------------------


class ToNNXDot(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.dot = nnx.bridge.ToNNX(LinenDot(OUT), rngs=rngs)
        self.b = nnx.Param(jax.random.uniform(rngs.params(), (1, OUT)))

    def __call__(self, x: Any) -> Any:
        return self.dot(x) + self.b


def to_nnx_dot(
    name: str = "guide-to_nnx_dot", tx: Any = optax.sgd, train_step: Any = None
) -> HybridCase:
    return from_nnx(
        name,
        model_fn=lambda rngs: nnx.bridge.lazy_init(ToNNXDot(rngs), jnp.ones((1, IN))),
        loss_fn=_xy_loss,
        train_step=train_step or nnx_train_step(_xy_loss),
        tx=tx,
        batches=_xy(),
        description="NNX module holding bridge.ToNNX(LinenDot), lazy_init; SGD",
    )


# -- to_linen_dot: a Linen module holding bridge.to_linen(NNXDot) ------------------


class ToLinenDot(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        dot = nnx.bridge.to_linen(NNXDot, x.shape[-1], OUT, name="dot")
        b = self.param("b", nn.initializers.lecun_normal(), (1, OUT))
        return dot(x) + b


def _dot_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    return _mse(ToLinenDot().apply(variables, batch[0]), batch[1])


@jax.jit
def _dot_train_step(state: Any, batch: Any) -> Any:
    loss = lambda p: _dot_loss({"params": p}, batch, None)  # noqa: E731
    value, grads = jax.value_and_grad(loss)(state.params)
    return state.apply_gradients(grads=grads), {"loss": value}


def to_linen_dot(
    name: str = "guide-to_linen_dot", train_step: Any = _dot_train_step
) -> HybridCase:
    return from_linen(
        name,
        module=ToLinenDot(),
        loss_fn=_dot_loss,
        train_step=train_step,
        tx=lambda lr: optax.adam(lr),
        init_args=(jnp.ones((1, IN)),),
        batches=_xy(),
        description="Linen module holding bridge.to_linen(NNXDot); Adam",
    )


# -- nnx_dropout_bn: ToNNX(nn.BatchNorm + nn.Dropout + nn.Dense) in NNX -------------


class LinenBlock(nn.Module):  # the Linen half: BatchNorm, Dropout, Dense
    @nn.compact
    def __call__(self, h: Any, train: bool) -> Any:
        h = nn.BatchNorm(use_running_average=not train)(h)
        h = nn.Dropout(0.5, deterministic=not train)(jax.nn.relu(h))
        return nn.Dense(OUT)(h)


class NNXDropoutBN(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.fc = nnx.Linear(IN, HID, rngs=rngs)
        self.block = nnx.bridge.ToNNX(LinenBlock(), rngs=rngs)

    def __call__(self, x: Any, *, train: bool = True, rngs: Any = None) -> Any:
        return self.block(self.fc(x), train, mutable=["batch_stats"], rngs=rngs)


def nnx_dropout_bn(
    name: str = "guide-nnx_dropout_bn", loss_fn: Any = _xy_loss, train_step: Any = None
) -> HybridCase:
    return from_nnx(
        name,
        model_fn=lambda rngs: nnx.bridge.lazy_init(
            NNXDropoutBN(rngs), jnp.ones((2, IN))
        ),
        loss_fn=loss_fn,
        train_step=train_step or nnx_train_step(loss_fn),
        tx=lambda lr: optax.sgd(lr, momentum=0.9),
        batches=_xy(),
        description="ToNNX(nn.BatchNorm + nn.Dropout + nn.Dense) in NNX; momentum",
    )


# -- linen_dropout_bn: to_linen(nnx.BatchNorm / nnx.Dropout) in Linen ----------------


class LinenDropoutBN(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = nn.Dense(HID, name="fc")(x)
        h = nnx.bridge.to_linen(nnx.BatchNorm, HID, name="bn")(h)
        h = nnx.bridge.to_linen(nnx.Dropout, 0.5, name="drop")(jax.nn.relu(h))
        return nn.Dense(OUT, name="head")(h)


def _bn_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    out, updates = LinenDropoutBN().apply(
        variables, batch["x"], rngs=rngs, mutable=["batch_stats"]
    )
    return _mse(out, batch["y"]), updates


class BNState(train_state.TrainState):
    batch_stats: Any


@jax.jit
def _bn_train_step(state: Any, batch: Any) -> Any:
    def loss(params: Any) -> Any:
        variables = {"params": params, "batch_stats": state.batch_stats}
        return _bn_loss(variables, batch, {"dropout": batch["rng"]})

    grads, updates = jax.grad(loss, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    return state.replace(batch_stats=updates["batch_stats"])


def linen_dropout_bn(
    name: str = "guide-linen_dropout_bn",
    loss_fn: Any = _bn_loss,
    train_step: Any = _bn_train_step,
    **changes: Any,
) -> HybridCase:
    return from_linen(
        name,
        module=LinenDropoutBN(),
        loss_fn=loss_fn,
        train_step=train_step,
        tx=optax.sgd,
        init_args=(jnp.ones((2, IN)),),
        batches=_xy_rng(),
        train_state=changes.pop("train_state", BNState),
        rngs=lambda batch: {"dropout": batch["rng"]},
        reseed=lambda params, batch, key: (params, {**batch, "rng": key}),
        description="to_linen(nnx.BatchNorm / nnx.Dropout) in Linen; SGD",
        **changes,
    )


# -- lora: nnx.LoRA (LoRAParam) beside ToNNX(LinenDot) -----------------------------


class LoraModel(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.w = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (IN, HID)))
        self.lora = nnx.LoRA(IN, 2, HID, rngs=rngs)
        self.head = nnx.bridge.ToNNX(LinenDot(OUT), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.head(jnp.tanh(x @ self.w + self.lora(x)))


def lora() -> HybridCase:
    return from_nnx(
        "guide-lora",
        model_fn=lambda rngs: nnx.bridge.lazy_init(LoraModel(rngs), jnp.ones((1, IN))),
        loss_fn=_xy_loss,
        train_step=nnx_train_step(_xy_loss),
        tx=optax.sgd,
        batches=_xy(),
        description="nnx.LoRA (lora_b = 0 at init) beside ToNNX(LinenDot); SGD",
    )


# -- counter: a Linen 'counter' collection (int32) through ToNNX -------------------


class CounterModel(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.fc = nnx.Linear(IN, HID, rngs=rngs)
        self.counted = nnx.bridge.ToNNX(LinenMultiCollections(OUT), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.counted(jnp.tanh(self.fc(x)), mutable=["counter"])


def counter() -> HybridCase:
    return from_nnx(
        "guide-counter",
        model_fn=lambda rngs: nnx.bridge.lazy_init(
            CounterModel(rngs), jnp.ones((1, IN))
        ),
        loss_fn=_xy_loss,
        train_step=nnx_train_step(_xy_loss),
        tx=optax.sgd,
        batches=_xy(),
        description="Linen counter/sow module through ToNNX: int32 state; SGD",
    )


# -- to_linen_multi: the guide's Param + LoRA + Count module via to_linen -----------


class MultiModel(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = nnx.bridge.to_linen(NNXMultiCollections, IN, HID, name="multi")(x)
        return nn.Dense(OUT, name="head")(jnp.tanh(h))


def _multi_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    out, updates = MultiModel().apply(variables, batch[0], mutable=["Count"])
    return _mse(out, batch[1]), updates


class CountsState(train_state.TrainState):
    Count: Any


@jax.jit
def _multi_train_step(state: Any, batch: Any) -> Any:
    def loss(trainable: Any) -> Any:  # LoRAParam is a collection of its own
        return _multi_loss({**trainable, "Count": state.Count}, batch, None)

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
        loss_fn=_multi_loss,
        train_step=_multi_train_step,
        tx=optax.sgd,
        init_args=(jnp.ones((1, IN)),),
        batches=_xy(),
        make_state=make_state,
        read_state=lambda state: {**state.params, "Count": state.Count},
        description="the guide's Param + LoRA + Count NNX module via to_linen; SGD",
    )


FAMILIES: dict[str, tuple[Any, tuple[int, ...]]] = {
    # name: (factory, the Flax release the guide's code needs)
    "to_nnx_dot": (to_nnx_dot, (0, 9, 0)),
    "to_linen_dot": (to_linen_dot, TO_LINEN_APPLY),
    "nnx_dropout_bn": (nnx_dropout_bn, TO_NNX_MUTABLE),
    "linen_dropout_bn": (linen_dropout_bn, TO_LINEN_APPLY),
    "lora": (lora, (0, 9, 0)),
    "counter": (counter, TO_NNX_MUTABLE),
    "to_linen_multi": (to_linen_multi, TO_LINEN_APPLY),
}


def cases() -> list[HybridCase]:
    """The guide families this release can run (none without the bridge)."""
    if not compat.HAS_BRIDGE:
        return []
    return [
        factory()
        for factory, needs in FAMILIES.values()
        if compat.FLAX_VERSION >= needs
    ]


# -- real bugs in the same models ------------------------------------------------


def _adam_optimizer_recreated() -> HybridCase:
    @nnx.jit
    def train_step(model: Any, optimizer: Any, batch: Any) -> None:
        grads = nnx.grad(_xy_loss)(model, batch)
        # BUG: a new optimizer every step: Adam's moments and count start over.
        optimizer = compat.make_optimizer(model, optimizer.tx, wrt=nnx.Param)
        compat.optimizer_update(optimizer, model, grads)

    return to_nnx_dot(
        "mutant-guide-adam_optimizer_recreated",
        tx=lambda lr: optax.adam(lr),
        train_step=train_step,
    )


def _adam_state_reset() -> HybridCase:
    @jax.jit
    def train_step(state: Any, batch: Any) -> Any:
        grads = jax.grad(lambda p: _dot_loss({"params": p}, batch, None))(state.params)
        # BUG: the TrainState is re-created from the params: opt_state starts over.
        state = train_state.TrainState.create(
            apply_fn=state.apply_fn, params=state.params, tx=state.tx
        )
        return state.apply_gradients(grads=grads)

    return to_linen_dot("mutant-guide-adam_state_reset", train_step=train_step)


def _constant_dropout_key_nnx() -> HybridCase:
    def loss_fn(model: Any, batch: Any) -> Any:
        # BUG: a fixed key: the same dropout mask on every step.
        return _mse(model(batch[0], rngs=jax.random.key(0)), batch[1])

    return nnx_dropout_bn("mutant-guide-constant_dropout_key_nnx", loss_fn=loss_fn)


def _eval_mode_in_training() -> HybridCase:
    def loss_fn(model: Any, batch: Any) -> Any:
        # BUG: the evaluation loss used for training: no dropout, running statistics.
        return _mse(model(batch[0], train=False), batch[1])

    return nnx_dropout_bn("mutant-guide-eval_mode_in_training", loss_fn=loss_fn)


def _stats_lost_in_jax_grad() -> HybridCase:
    @nnx.jit
    def train_step(model: Any, optimizer: Any, batch: Any) -> None:
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

        def loss(params: Any) -> Any:
            copy = nnx.merge(graphdef, params, rest, copy=True)
            return _xy_loss(copy, batch), nnx.state(copy, nnx.Not(nnx.Param))

        grads, _new_rest = jax.grad(loss, has_aux=True)(params)
        compat.optimizer_update(optimizer, model, grads)
        # BUG: nnx.update(model, _new_rest) is missing: the BatchNorm statistics and
        # RNG counts the forward pass produced are dropped with the copy.

    return nnx_dropout_bn("mutant-guide-stats_lost_in_jax_grad", train_step=train_step)


def _constant_dropout_key_linen() -> HybridCase:
    def loss_fn(variables: Any, batch: Any, rngs: Any) -> Any:
        # BUG: the rngs argument is ignored: a constant key, the same mask.
        return _bn_loss(variables, batch, {"dropout": jax.random.key(0)})

    @jax.jit
    def train_step(state: Any, batch: Any) -> Any:
        def loss(params: Any) -> Any:
            variables = {"params": params, "batch_stats": state.batch_stats}
            return loss_fn(variables, batch, {"dropout": batch["rng"]})

        grads, updates = jax.grad(loss, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads)
        return state.replace(batch_stats=updates["batch_stats"])

    return linen_dropout_bn(
        "mutant-guide-constant_dropout_key_linen",
        loss_fn=loss_fn,
        train_step=train_step,
    )


def _stats_not_returned() -> HybridCase:
    @jax.jit
    def train_step(state: Any, batch: Any) -> Any:
        def loss(params: Any) -> Any:
            variables = {"params": params, "batch_stats": state.batch_stats}
            return _bn_loss(variables, batch, {"dropout": batch["rng"]})

        grads, _updates = jax.grad(loss, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads)  # BUG: batch_stats not replaced

    return linen_dropout_bn("mutant-guide-stats_not_returned", train_step=train_step)


def _stats_moved_by_sgd() -> HybridCase:
    @jax.jit
    def train_step(state: Any, batch: Any) -> Any:
        # BUG: every collection differentiated and moved by the optimizer; the
        # statistics get a zero gradient and never change.
        loss = lambda v: _bn_loss(v, batch, {"dropout": batch["rng"]})[0]  # noqa: E731
        return state.apply_gradients(grads=jax.grad(loss)(state.params))

    def make_state(v: Any, tx: Any) -> Any:
        everything = {"params": v["params"], "batch_stats": v["batch_stats"]}
        return train_state.TrainState.create(
            apply_fn=LinenDropoutBN().apply, params=everything, tx=tx
        )

    return linen_dropout_bn(
        "mutant-guide-stats_moved_by_sgd",
        train_step=train_step,
        make_state=make_state,
        read_state=lambda state: state.params,
    )


class _LoraAsState(train_state.TrainState):
    LoRAParam: Any
    Count: Any


def _lora_left_out() -> HybridCase:
    @jax.jit
    def train_step(state: Any, batch: Any) -> Any:
        def loss(params: Any) -> Any:
            variables = {"params": params, "LoRAParam": state.LoRAParam}
            return _multi_loss({**variables, "Count": state.Count}, batch, None)

        grads, updates = jax.grad(loss, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads).replace(Count=updates["Count"])

    def make_state(v: Any, tx: Any) -> Any:
        # BUG: only 'params' is trained; the LoRAParam collection rides along as state.
        return _LoraAsState.create(
            apply_fn=MultiModel().apply,
            params=v["params"],
            tx=tx,
            LoRAParam=v["LoRAParam"],
            Count=v["Count"],
        )

    return from_linen(
        "mutant-guide-lora_left_out",
        module=MultiModel(),
        loss_fn=_multi_loss,
        train_step=train_step,
        tx=optax.sgd,
        init_args=(jnp.ones((1, IN)),),
        batches=_xy(),
        make_state=make_state,
    )


_MUTANTS = (
    # (name, make, caught_by, bug, the Flax release the model needs)
    (
        "adam_optimizer_recreated",
        _adam_optimizer_recreated,
        "update_matches_tx",
        "NNX train_step builds a new nnx.Optimizer each call: Adam state reset",
        (0, 9, 0),
    ),
    (
        "adam_state_reset",
        _adam_state_reset,
        "update_matches_tx",
        "Linen train_step re-creates the TrainState: Adam's opt_state reset",
        TO_LINEN_APPLY,
    ),
    (
        "constant_dropout_key_nnx",
        _constant_dropout_key_nnx,
        "randomness_is_used",
        "ToNNX Dropout called with a fixed key: the same mask every step",
        TO_NNX_MUTABLE,
    ),
    (
        "eval_mode_in_training",
        _eval_mode_in_training,
        "randomness_is_used",
        "the training loss runs the model with train=False (eval mode)",
        TO_NNX_MUTABLE,
    ),
    (
        "stats_lost_in_jax_grad",
        _stats_lost_in_jax_grad,
        "state_is_threaded",
        "jax.grad over a merged copy, its new state not written back (nnx.update)",
        TO_NNX_MUTABLE,
    ),
    (
        "constant_dropout_key_linen",
        _constant_dropout_key_linen,
        "randomness_is_used",
        "Linen loss ignores its rngs argument: a constant dropout key",
        TO_LINEN_APPLY,
    ),
    (
        "stats_not_returned",
        _stats_not_returned,
        "state_is_threaded",
        "Linen train_step drops the batch_stats its forward pass returned",
        TO_LINEN_APPLY,
    ),
    (
        "stats_moved_by_sgd",
        _stats_moved_by_sgd,
        "state_is_threaded",
        "batch_stats differentiated with jax.grad and moved by SGD (never change)",
        TO_LINEN_APPLY,
    ),
    (
        "lora_left_out",
        _lora_left_out,
        "every_trainable_is_trained",
        "the LoRAParam collection left out of TrainState.params: never trained",
        TO_LINEN_APPLY,
    ),
)


def mutants() -> list[CaseMutant]:
    """The bugs above this release can run (none without the bridge)."""
    if not compat.HAS_BRIDGE:
        return []
    return [
        CaseMutant(f"guide-{name}", make, caught_by, bug)
        for name, make, caught_by, bug, needs in _MUTANTS
        if compat.FLAX_VERSION >= needs
    ]


# -- how much user code each family takes ------------------------------------------

_SOURCES: dict[str, tuple[Any, ...]] = {
    "to_nnx_dot": (ToNNXDot, _xy_loss, nnx_train_step, to_nnx_dot),
    "to_linen_dot": (ToLinenDot, _dot_loss, _dot_train_step, to_linen_dot),
    "nnx_dropout_bn": (
        LinenBlock,
        NNXDropoutBN,
        _xy_loss,
        nnx_train_step,
        nnx_dropout_bn,
    ),
    "linen_dropout_bn": (
        LinenDropoutBN,
        _bn_loss,
        BNState,
        _bn_train_step,
        linen_dropout_bn,
    ),
    "lora": (LoraModel, _xy_loss, nnx_train_step, lora),
    "counter": (CounterModel, _xy_loss, nnx_train_step, counter),
    "to_linen_multi": (
        MultiModel,
        _multi_loss,
        CountsState,
        _multi_train_step,
        to_linen_multi,
    ),
}


def _code_lines(obj: Any) -> int:
    """Lines of ``obj``'s source holding code: no blank, comment or docstring lines."""
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(obj)))
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                end = body[0].end_lineno or body[0].lineno
                docstrings.update(range(body[0].lineno, end + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT}
    skip |= {tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def user_code_lines() -> dict[str, int]:
    """Per family, the lines of user code: model, loss, train step, from_* call."""
    return {
        name: sum(_code_lines(obj) for obj in objs) for name, objs in _SOURCES.items()
    }
