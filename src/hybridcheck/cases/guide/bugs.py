"""The bugs users write in the guide's models, each with the invariant naming it."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from hybridcheck import compat
from hybridcheck.cases.guide.common import (
    IN,
    TO_LINEN_APPLY,
    TO_NNX_MUTABLE,
    mse,
    xy,
    xy_loss,
)
from hybridcheck.cases.guide.linen_families import (
    LinenDropoutBN,
    MultiModel,
    bn_loss,
    dot_loss,
    linen_bn_train_step,
    linen_dropout_bn,
    multi_loss,
    to_linen_dot,
)
from hybridcheck.cases.guide.nnx_families import nnx_dropout_bn, to_nnx_dot
from hybridcheck.cases.mutants import CaseMutant
from hybridcheck.compat import nnx
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.flaxmodels.functionalize import from_linen


def _adam_optimizer_recreated() -> HybridCase:
    @nnx.jit
    def train_step(model: Any, optimizer: Any, batch: Any) -> None:
        grads = nnx.grad(xy_loss)(model, batch)
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
        grads = jax.grad(lambda p: dot_loss({"params": p}, batch, None))(state.params)
        # BUG: the TrainState is re-created from the params: opt_state starts over.
        state = train_state.TrainState.create(
            apply_fn=state.apply_fn, params=state.params, tx=state.tx
        )
        return state.apply_gradients(grads=grads)

    return to_linen_dot("mutant-guide-adam_state_reset", train_step=train_step)


def _constant_dropout_key_nnx() -> HybridCase:
    def loss_fn(model: Any, batch: Any) -> Any:
        # BUG: a fixed key: the same dropout mask on every step.
        return mse(model(batch[0], rngs=jax.random.key(0)), batch[1])

    return nnx_dropout_bn("mutant-guide-constant_dropout_key_nnx", loss_fn=loss_fn)


def _eval_mode_in_training() -> HybridCase:
    def loss_fn(model: Any, batch: Any) -> Any:
        # BUG: the evaluation loss used for training: no dropout, running statistics.
        return mse(model(batch[0], train=False), batch[1])

    return nnx_dropout_bn("mutant-guide-eval_mode_in_training", loss_fn=loss_fn)


def _stats_lost_in_jax_grad() -> HybridCase:
    @nnx.jit
    def train_step(model: Any, optimizer: Any, batch: Any) -> None:
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

        def loss(params: Any) -> Any:
            copy = nnx.merge(graphdef, params, rest, copy=True)
            return xy_loss(copy, batch), nnx.state(copy, nnx.Not(nnx.Param))

        grads, _new_rest = jax.grad(loss, has_aux=True)(params)
        compat.optimizer_update(optimizer, model, grads)
        # BUG: nnx.update(model, _new_rest) is missing: the BatchNorm statistics and
        # RNG counts the forward pass produced are dropped with the copy.

    return nnx_dropout_bn("mutant-guide-stats_lost_in_jax_grad", train_step=train_step)


def _constant_dropout_key_linen() -> HybridCase:
    def loss_fn(variables: Any, batch: Any, rngs: Any) -> Any:
        # BUG: the rngs argument is ignored: a constant key, the same mask.
        return bn_loss(variables, batch, {"dropout": jax.random.key(0)})

    return linen_dropout_bn(
        "mutant-guide-constant_dropout_key_linen",
        loss_fn=loss_fn,
        train_step=linen_bn_train_step(loss_fn),
    )


def _stats_not_returned() -> HybridCase:
    @jax.jit
    def train_step(state: Any, batch: Any) -> Any:
        def loss(params: Any) -> Any:
            variables = {"params": params, "batch_stats": state.batch_stats}
            return bn_loss(variables, batch, {"dropout": batch["rng"]})

        grads, _updates = jax.grad(loss, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads)  # BUG: batch_stats not replaced

    return linen_dropout_bn("mutant-guide-stats_not_returned", train_step=train_step)


def _stats_moved_by_sgd() -> HybridCase:
    @jax.jit
    def train_step(state: Any, batch: Any) -> Any:
        # BUG: every collection differentiated and moved by the optimizer; the
        # statistics get a zero gradient and never change.
        loss = lambda v: bn_loss(v, batch, {"dropout": batch["rng"]})[0]  # noqa: E731
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
            return multi_loss({**variables, "Count": state.Count}, batch, None)

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
        loss_fn=multi_loss,
        train_step=train_step,
        tx=optax.sgd,
        init_args=(jnp.ones((1, IN)),),
        batches=xy(),
        make_state=make_state,
    )


BUGS = (
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
        for name, make, caught_by, bug, needs in BUGS
        if compat.FLAX_VERSION >= needs
    ]
