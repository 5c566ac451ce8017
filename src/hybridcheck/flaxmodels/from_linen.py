"""A Linen module, its TrainState and the user's train step as a case.

See ``functionalize.py`` for the halves and the automatic fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
from flax import core as flax_core
from flax import linen as nn

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.describe.fields import given
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.trees import InvariantNotApplicable
from hybridcheck.describe.usercode import call, check_common
from hybridcheck.flaxmodels import graph as _graph
from hybridcheck.flaxmodels import specs as model_specs
from hybridcheck.flaxmodels.functional import (
    Functional,
    Patterns,
    check_options,
    loss_value,
)
from hybridcheck.flaxmodels.halves import OPT, STATE
from hybridcheck.flaxmodels.opt_half import (
    LR0,
    LR1,
    PlainTree,
    model_part,
    opt_fields,
    plain_opt_state,
    read_train_state,
    replace_fields,
)
from hybridcheck.flaxmodels.optimizers import (
    check_optimizer_args,
    common_tx,
    lr_plan,
)

__all__ = ["from_linen"]


def from_linen(
    name: str,
    *,
    module: Any,
    loss_fn: Callable[[Any, Any, Any], Any],
    train_step: Callable[[Any, Any], Any],
    init_args: Sequence[Any],
    batches: Any,
    tx: Callable[[Any], Any] | None = None,
    train_state_fn: Callable[[Any, Any], Any] | None = None,
    init_kwargs: Mapping[str, Any] | None = None,
    train_state: type | None = None,
    make_state: Callable[[Any, Any], Any] | None = None,
    read_state: Callable[[Any], Mapping[str, Any]] | None = None,
    rngs: Callable[[Any], Mapping[str, Any]] | None = None,
    halves: Patterns | None = None,
    lr: Any = None,
    sgd: bool | None = None,
    description: str = "",
    **options: Any,
) -> HybridCase:
    """A case from a Linen module (possibly holding NNX parts via ``bridge.to_linen``).

    Args:
      module: a Linen module instance.
      loss_fn: ``loss_fn(variables, batch, rngs) -> scalar`` (or ``(scalar, aux)``);
        ``variables`` holds every collection. Return ``(loss, updates)`` with the
        ``updates`` of ``apply(..., mutable=[...])`` to have ``state_is_threaded``
        check that the step returns them.
      train_step: the user's ``train_step(state, batch) -> state`` or
        ``(state, metrics)``.
      init_args, init_kwargs: example inputs for ``module.init``.
      tx: a function of the learning rate, as in :func:`from_nnx`. The state's
        ``step`` and ``opt_state`` travel in the ``opt`` half, from step to step.
      train_state_fn: instead of ``tx``/``train_state``/``make_state``, your own
        ``TrainState.create`` call: ``train_state_fn(variables, lr) -> state``
        (``variables`` holds every collection), with any optax transformation or
        schedule; ``tx`` is the state's own ``.tx``. A learning rate it cannot
        take traced is fixed as in :func:`from_nnx`.
      train_state: your ``TrainState`` subclass (default flax's ``TrainState``); a
        field named like a collection (``batch_stats: Any``) starts with it.
      make_state: ``make_state(variables, tx) -> state`` (default
        ``train_state.create(apply_fn=module.apply, params=variables['params'],
        tx=tx, batch_stats=variables['batch_stats'], ...)``, one keyword per field
        of ``train_state`` named like a collection).
      read_state: ``read_state(state) -> {collection: tree}`` (default: ``params``
        and every other collection the state has a field of the same name for;
        collections it does not return keep their old value).
      rngs: ``rngs(batch) -> {stream: key}`` for ``loss_fn`` (default a fixed
        ``{"dropout": jax.random.key(0)}``): give the keys your step uses. With a
        key in the batch, also pass ``reseed=lambda params, batch, key: (params,
        {**batch, "rng": key})`` for ``randomness_is_used``.
      name, batches, halves, lr, sgd, description, options: as in :func:`from_nnx`.
    """
    check_optimizer_args(
        name,
        "from_linen",
        tx=tx,
        factory=train_state_fn,
        factory_name="train_state_fn",
        example="lambda variables, lr: TrainState.create(apply_fn=module.apply, "
        "params=variables['params'], tx=optax.adam(lr))",
        not_with={"train_state": train_state, "make_state": make_state},
    )
    check_common(name, halves, common_tx(tx), loss_fn=loss_fn, train_step=train_step)
    check_options(name, "from_linen", "module", batches, options)
    make_tx = cast(Callable[[Any], Any], tx)  # given where no factory builds it
    if not isinstance(module, nn.Module):
        fix = (
            f"; write module={module.__name__}(...), an instance"
            if isinstance(module, type) and issubclass(module, nn.Module)
            else ""
        )
        raise TypeError(
            f"[{name}] module must be a Linen module instance, got {given(module)}{fix}"
        )
    if not isinstance(init_args, tuple | list):
        raise TypeError(
            f"[{name}] init_args must be a tuple of example inputs for module.init, "
            f"e.g. (jnp.zeros((1, 4)),); got {type(init_args).__name__}"
        )
    if init_kwargs is not None and not isinstance(init_kwargs, Mapping):
        raise TypeError(
            f"[{name}] init_kwargs must be a dict of keyword inputs for module.init "
            f"or None, got {given(init_kwargs)}; e.g. init_kwargs={{'train': False}}"
        )
    kwargs = dict(init_kwargs or {})
    for arg, fn in {
        "make_state": make_state,
        "read_state": read_state,
        "rngs": rngs,
    }.items():
        if fn is not None and not callable(fn):
            raise TypeError(
                f"[{name}] {arg} must be a function or None, got {given(fn)}"
            )
    if train_state is None:
        from flax.training import train_state as flax_train_state

        train_state = flax_train_state.TrainState
    if not (dataclasses.is_dataclass(train_state) and hasattr(train_state, "create")):
        raise TypeError(
            f"[{name}] train_state must be a TrainState class (a subclass of "
            f"flax.training.train_state.TrainState), got {train_state!r:.80}"
        )
    extra_fields = {f.name for f in dataclasses.fields(train_state)} - {"params"}

    def boxed_for(key: jax.Array) -> Any:
        k_params, k_dropout = jax.random.split(key)
        keys = {"params": k_params, "dropout": k_dropout}
        return call(
            name, "module.init", lambda: module.init(keys, *init_args, **kwargs)
        )

    def variables_for(key: jax.Array) -> dict[str, Any]:
        return _graph.linen_variables(boxed_for(key))

    with _graph.spot_to_linen() as wrappers:
        boxed = boxed_for(jax.random.PRNGKey(0))
    template = _graph.linen_variables(boxed)
    layout = _graph.linen_layout(name, template, wrappers, halves)
    state_collections = {
        c
        for c in template
        if not issubclass(compat.collection_variable_type(str(c)) or object, nnx.Param)
    }

    def built_state(variables: Mapping[str, Any], lr: Any) -> Any:
        if train_state_fn is not None:
            state = call(name, "train_state_fn", train_state_fn, variables, lr)
            if not (dataclasses.is_dataclass(state) and hasattr(state, "params")):
                raise TypeError(
                    f"[{name}] train_state_fn(variables, lr) must return a train "
                    f"state (TrainState.create(...)), got {given(state)}"
                )
            return state
        made = call(name, "tx", make_tx, lr)
        if make_state is None:
            collections = {c: variables[c] for c in variables if c in extra_fields}
            return train_state.create(  # type: ignore[union-attr]
                apply_fn=module.apply,
                params=variables["params"],
                tx=made,
                **collections,
            )
        return call(name, "make_state", make_state, variables, made)

    plan = lr_plan(
        name,
        "tx" if train_state_fn is None else "train_state_fn",
        lambda lr: opt_fields(built_state(template, lr)),
        lr,
    )

    def new_state(variables: Mapping[str, Any], lr: Any) -> Any:
        return built_state(variables, plan.used(lr))

    def tx_at(lr: Any) -> Any:  # the optax transformation a step applies
        if train_state_fn is None:
            return call(name, "tx", make_tx, plan.used(lr))
        return new_state(template, lr).tx  # TrainState.create keeps it

    opt: PlainTree | None = None
    fields0 = opt_fields(new_state(template, LR0))
    if fields0 is not None:
        opt = PlainTree.of(fields0, opt_fields(new_state(template, LR1)))

    def keys_for(batch: Any) -> Any:
        if rngs is None:
            return {"dropout": jax.random.key(0)}
        return call(name, "rngs", rngs, batch)

    def init(key: jax.Array) -> dict[str, Any]:
        variables = variables_for(key)
        out = layout.halves(variables, after="module.init")
        if opt is not None:
            fields = opt_fields(new_state(variables, LR0))
            out[OPT] = plain_opt_state(name, opt, fields, "tx(lr).init")
        return out

    def loss(params: Any, batch: Any) -> Any:
        variables = layout.rebuild(model_part(params))
        return loss_value(
            call(name, "loss_fn", loss_fn, variables, batch, keys_for(batch))
        )

    def step(params: Any, batch: Any, lr: Any) -> dict[str, Any]:
        variables = layout.rebuild(model_part(params))
        state = new_state(variables, lr)
        if opt is not None:
            fresh_fields = opt_fields(state)
            state = replace_fields(state, **opt.rebuild(params[OPT], fresh_fields))
        out = call(name, "train_step", train_step, state, batch)
        new = out[0] if type(out) is tuple else out
        if read_state is None:
            updates = read_train_state(name, new, variables)
        else:
            updates = call(name, "read_state", read_state, new)
        new_vars = {**variables, **flax_core.unfreeze(dict(updates))}
        result = layout.halves(new_vars, after="the user's train_step")
        if opt is not None:
            fields = opt_fields(new)
            if fields is None:
                raise TypeError(
                    f"[{name}] the state from the user's train_step has no "
                    "step/opt_state fields (the state make_state built has them)"
                )
            result[OPT] = plain_opt_state(name, opt, fields, "the user's train_step")
        return result

    def state_fn(params: Any, batch: Any) -> dict[str, Any]:
        variables = layout.rebuild(model_part(params))
        out = call(name, "loss_fn", loss_fn, variables, batch, keys_for(batch))
        aux = out[1] if type(out) is tuple and len(out) == 2 else None
        found = (
            {c: v for c, v in aux.items() if c in state_collections}
            if isinstance(aux, Mapping)
            else {}
        )
        if not found:
            raise InvariantNotApplicable(
                "loss_fn returns no (loss, updates) with the updated collections "
                f"({sorted(map(str, state_collections))}): return the second result "
                "of apply(..., mutable=[...]) to check that the step threads them"
            )
        new_vars = {**variables, **flax_core.unfreeze(dict(found))}
        return {STATE: layout.halves(new_vars, after="the user's loss_fn")[STATE]}

    auto = {
        "state_fn": state_fn if STATE in layout.labels else None,
        "partition_specs": model_specs.linen_specs(layout, boxed),
    }
    made = Functional(layout, opt, init, loss, step, auto)
    derived = train_state_fn is not None or plan.fixed is not None
    return made.case(
        "Linen",
        name,
        tx_at if derived else tx,
        sgd,
        batches,
        plan.case_lr,
        description,
        options,
        given=tx,
    )
