"""Cases from the objects users have: a real NNX or Linen model and its real train step.

:func:`from_nnx` and :func:`from_linen` turn a model factory, the user's loss and the
user's own training step into a functional :class:`~hybridcheck.case.HybridCase`:
``init(key) -> {half: {...plain arrays}}``, ``loss(params, batch)`` and
``step(params, batch, lr)``. Each call rebuilds a *fresh* model from the arrays (new
Variables, nothing shared between traces), so the case works under ``jax.jit``,
``jax.disable_jit()`` and ``jax.grad``.

Halves (``_graph.py``): ``nnx`` / ``linen:<ToNNX path>`` / ``linen`` /
``nnx:<ToLinen path>`` for parameters, then the non-trainable ones:

* ``state``: BatchNorm statistics, counters, Linen mutable collections;
* ``rng``: NNX RNG state (``nnx.RngKey`` as ``uint32`` key data, ``nnx.RngCount``);
* ``opt``: the optimizer's state (``nnx.Optimizer``'s step and optax state, or a
  ``TrainState``'s ``step`` and ``opt_state``), threaded from step to step: each step
  builds the optimizer from ``tx(lr)`` and installs this half into it.

The case also gets what the training-loop invariants need:

* ``tx``: the ``tx`` given (``update_matches_tx``), where the optimizer state is
  threaded (always for NNX; for Linen when the state has ``step``/``opt_state``);
* ``state_fn`` (``state_is_threaded``): NNX: the ``state``/``rng`` halves after one
  call of ``loss_fn`` on a fresh model (the training forward pass). Linen: when
  ``loss_fn`` returns ``(loss, aux)`` with ``aux`` a mapping of Linen collections
  (what ``apply(..., mutable=[...])`` returns), those collections are the forward
  pass's new state; a ``loss_fn`` that returns none makes the invariant n/a;
* ``reseed`` and ``rng_halves`` (``randomness_is_used``): NNX only, where the model
  holds RNG state *and* a stochastic layer (``_graph.nnx_stochastic``: an
  ``nnx.Dropout`` or a Linen ``nn.Dropout`` under ``ToNNX`` with ``rate > 0``;
  override with ``stochastic=``). ``reseed`` replaces every RNG key of the ``rng``
  half with keys derived from the new key and keeps the counts. Where the dropout
  key travels in the batch, pass ``reseed=`` yourself (a HybridCase field).

Every automatic field can be overridden by passing it (``tx=``, ``state_fn=``,
``reseed=``, ``rng_halves=`` ... as keyword options; ``None`` switches it off).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from flax import core as flax_core
from flax import linen as nn

from hybridcheck import _graph, compat
from hybridcheck._halves import OPT, RNG, STATE, Layout, PlainTree
from hybridcheck._usercode import UserCodeError, call, check_common
from hybridcheck.case import HybridCase
from hybridcheck.compat import nnx
from hybridcheck.invariants import InvariantNotApplicable

__all__ = ["UserCodeError", "from_linen", "from_nnx"]

Patterns = Mapping[str, str | Sequence[str]]

LR0, LR1 = 0.1, 0.01
"""The learning rate ``init`` builds the optimizer with, and a second one: optimizer
state leaves that differ between the two (``optax.inject_hyperparams``) are taken
from each step's own ``tx(lr)`` instead of being carried over."""

_AUTO = ("state_fn", "reseed", "rng_halves")


def _is_sgd(tx: Any) -> bool:
    optax = sys.modules.get("optax")
    return optax is not None and tx is optax.sgd


def _loss_value(out: Any) -> Any:
    return out[0] if type(out) is tuple else out


def _model_part(params: Any) -> Any:
    """``params`` without the optimizer half (what the model's layout rebuilds)."""
    if isinstance(params, Mapping) and OPT in params:
        return {k: v for k, v in params.items() if k != OPT}
    return params


def _case(
    name: str,
    layout: Layout,
    tx: Any,
    sgd: bool | None,
    opt: PlainTree | None,
    auto: dict[str, Any],
    options: dict[str, Any],
    **fields: Any,
) -> Any:
    if opt is not None:
        auto = {**auto, "tx": tx}
    auto = {k: v for k, v in auto.items() if v is not None}
    for key in _AUTO:  # the user's own value wins, None switches it off
        if key in options:
            auto.pop(key, None)
            value = options.pop(key)
            if value is not None:
                auto[key] = value
    return HybridCase(
        name=name,
        non_trainable=layout.non_trainable + ((OPT,) if opt is not None else ()),
        sgd=_is_sgd(tx) if sgd is None else sgd,
        **fields,
        **auto,
        **options,
    )


def _plain(
    name: str, tree: PlainTree, state: Any, after: str
) -> dict[str, Any]:  # the optimizer state as plain arrays, its structure checked
    treedef = jax.tree.structure(state)
    if treedef != tree.treedef:
        raise ValueError(
            f"[{name}] after {after} the optimizer's state has another structure "
            f"than the one tx(lr).init gives ({treedef} vs {tree.treedef}); "
            "hybridcheck threads the optimizer state from step to step and needs it "
            "to keep its structure"
        )
    return tree.plain(state)


# -- NNX ---------------------------------------------------------------------------


def _build_nnx(name: str, model_fn: Callable[..., Any], key: jax.Array) -> Any:
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    model = call(name, "model_fn", model_fn, nnx.Rngs(key))
    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"[{name}] model_fn(rngs) must return an nnx.Module, got "
            f"{type(model).__name__} (for a Linen module use from_linen)"
        )
    compat.drop_intermediates(model)  # sown values are outputs, not state
    return model


def from_nnx(
    name: str,
    *,
    model_fn: Callable[[Any], Any],
    loss_fn: Callable[[Any, Any], Any],
    train_step: Callable[[Any, Any, Any], Any],
    tx: Callable[[Any], Any],
    batches: Any,
    halves: Patterns | None = None,
    wrt: Any = None,
    stochastic: bool | None = None,
    lr: Any = None,
    sgd: bool | None = None,
    description: str = "",
    **options: Any,
) -> HybridCase:
    """A case from an NNX model (possibly holding Linen parts in ``bridge.ToNNX``).

    Args:
      name: the case name.
      model_fn: ``model_fn(rngs: nnx.Rngs) -> nnx.Module``, fully initialised (call
        ``bridge.lazy_init`` inside it), in training mode.
      loss_fn: ``loss_fn(model, batch) -> scalar`` (or ``(scalar, aux)``): the
        training forward pass (hybridcheck also runs it alone as the forward pass
        whose state the step must return).
      train_step: the user's ``train_step(model, optimizer, batch)``, updating in
        place through ``nnx.Optimizer`` (its return value is ignored; ``@nnx.jit``
        is fine).
      tx: a function of the learning rate: ``optax.sgd``, ``lambda lr: optax.adam(lr)``.
        Each step builds ``nnx.Optimizer(model, tx(lr), wrt=...)`` afresh and
        installs the ``opt`` half (the state the previous step left) into it.
      batches: a Hypothesis strategy of batches, or ``batch_fn(key)``.
      halves: ``{label: pattern(s)}`` over '/'-joined parameter paths, overriding
        the automatic labels (``{"encoder": "encoder/*"}``).
      wrt: the optimizer's filter, as in your code (default ``nnx.Param``; e.g.
        ``nnx.LoRAParam`` to fine-tune LoRA only: mark the rest ``frozen``).
      stochastic: whether the model draws randomness from its RNG state in training
        (enables ``randomness_is_used``). Default: an ``nnx.Dropout`` or Linen
        ``nn.Dropout`` with ``rate > 0`` is in the model (see the module doc).
      lr, description, options: passed to :class:`HybridCase` (``frozen``,
        ``extra_checks``, ``param_seeds``, or any automatic field to override);
        ``sgd`` defaults to ``tx is optax.sgd``.

    Raises:
      TypeError, ValueError: bad arguments, or fewer than two trainable halves.
      UserCodeError: ``model_fn``/``loss_fn``/``train_step``/``tx`` raised.

    Example:
      >>> case = from_nnx("mine", model_fn=make, loss_fn=loss, train_step=step,
      ...                 tx=optax.sgd, batches=my_batches)
    """
    check_common(
        name, halves, tx, model_fn=model_fn, loss_fn=loss_fn, train_step=train_step
    )
    if stochastic is not None and not isinstance(stochastic, bool):
        raise TypeError(f"[{name}] stochastic must be True, False or None")
    with _graph.spot_linen_dropout() as dropouts:
        template = _build_nnx(name, model_fn, jax.random.PRNGKey(0))
    graphdef = nnx.split(template)[0]
    layout = _graph.nnx_layout(name, template, halves)
    wrt = nnx.Param if wrt is None else wrt

    def optimizer_for(model: Any, lr: Any) -> Any:
        return compat.make_optimizer(model, call(name, "tx", tx, lr), wrt=wrt)

    def opt_state_at(lr: float) -> Any:
        return compat.optimizer_state(optimizer_for(template, lr))

    found = PlainTree.of(opt_state_at(LR0), opt_state_at(LR1))
    opt = found if found.keys else None

    def fresh(params: Any) -> Any:
        return nnx.merge(graphdef, layout.rebuild(_model_part(params)))

    def model_halves(model: Any, after: str) -> dict[str, Any]:
        compat.drop_intermediates(model)
        return layout.halves(nnx.split(model)[1], after=after)

    def init(key: jax.Array) -> dict[str, Any]:
        model = _build_nnx(name, model_fn, key)
        out = model_halves(model, "model_fn")
        if opt is not None:
            state = compat.optimizer_state(optimizer_for(model, LR0))
            out[OPT] = _plain(name, opt, state, "tx(lr).init")
        return out

    def loss(params: Any, batch: Any) -> Any:
        return _loss_value(call(name, "loss_fn", loss_fn, fresh(params), batch))

    def step(params: Any, batch: Any, lr: Any) -> dict[str, Any]:
        model = fresh(params)
        optimizer = optimizer_for(model, lr)
        if opt is not None:
            carried = opt.rebuild(params[OPT], compat.optimizer_state(optimizer))
            compat.set_optimizer_state(optimizer, carried)
        call(name, "train_step", train_step, model, optimizer, batch)
        out = model_halves(model, "the user's train_step")
        if opt is not None:
            state = compat.optimizer_state(optimizer)
            out[OPT] = _plain(name, opt, state, "the user's train_step")
        return out

    def state_fn(params: Any, batch: Any) -> dict[str, Any]:
        model = fresh(params)
        call(name, "loss_fn", loss_fn, model, batch)
        out = model_halves(model, "the user's loss_fn")
        return {h: out[h] for h in layout.non_trainable}

    def reseed(params: Any, batch: Any, key: Any) -> tuple[Any, Any]:
        return {**params, **layout.reseed(_model_part(params), key)}, batch

    has_rng = RNG in layout.labels
    if stochastic is None:
        stochastic = _graph.nnx_stochastic(template, len(dropouts))
    auto = {
        "state_fn": state_fn if layout.non_trainable else None,
        "reseed": reseed if has_rng and stochastic else None,
        "rng_halves": (RNG,) if has_rng else None,
    }
    return _case(
        name,
        layout,
        tx,
        sgd,
        opt,
        auto,
        options,
        init=init,
        loss=loss,
        batches=batches,
        step=step,
        lr=lr,
        description=description or f"NNX model, halves {layout.labels}",
    )


# -- Linen -------------------------------------------------------------------------


def _read_train_state(name: str, state: Any, variables: Mapping[str, Any]) -> Any:
    if not dataclasses.is_dataclass(state):
        raise TypeError(
            f"[{name}] the user's train_step must return a TrainState or (state, "
            f"metrics), got {type(state).__name__}; or pass read_state=fn(state) -> "
            "{collection: tree}"
        )
    fields = {f.name for f in dataclasses.fields(state)}
    if "params" not in fields:
        raise TypeError(
            f"[{name}] the state from the user's train_step has no 'params' field; "
            "pass read_state=fn(state) -> {collection: tree}"
        )
    return {c: getattr(state, c) for c in variables if c in fields}


def _opt_fields(state: Any) -> dict[str, Any] | None:
    """A train state's ``step`` and ``opt_state`` (None: it has no such fields)."""
    if not dataclasses.is_dataclass(state) or isinstance(state, type):
        return None
    fields = {f.name for f in dataclasses.fields(state)}
    if not {"step", "opt_state"} <= fields:
        return None
    return {"step": getattr(state, "step"), "opt_state": getattr(state, "opt_state")}  # noqa: B009


def _replace(state: Any, **changes: Any) -> Any:
    if callable(getattr(state, "replace", None)):
        return state.replace(**changes)
    return dataclasses.replace(state, **changes)


def from_linen(
    name: str,
    *,
    module: Any,
    loss_fn: Callable[[Any, Any, Any], Any],
    train_step: Callable[[Any, Any], Any],
    tx: Callable[[Any], Any],
    init_args: Sequence[Any],
    batches: Any,
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
      tx: a function of the learning rate, as in :func:`from_nnx`. The state's
        ``step`` and ``opt_state`` travel in the ``opt`` half, from step to step.
      init_args, init_kwargs: example inputs for ``module.init``.
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
    check_common(name, halves, tx, loss_fn=loss_fn, train_step=train_step)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"[{name}] module must be a Linen module instance, got {module!r:.80}"
        )
    if not isinstance(init_args, tuple | list):
        raise TypeError(
            f"[{name}] init_args must be a tuple of example inputs for module.init, "
            f"e.g. (jnp.zeros((1, 4)),); got {type(init_args).__name__}"
        )
    kwargs = dict(init_kwargs or {})
    for arg, fn in {"make_state": make_state, "read_state": read_state}.items():
        if fn is not None and not callable(fn):
            raise TypeError(f"[{name}] {arg} must be callable or None")
    if train_state is None:
        from flax.training import train_state as flax_train_state

        train_state = flax_train_state.TrainState
    if not (dataclasses.is_dataclass(train_state) and hasattr(train_state, "create")):
        raise TypeError(
            f"[{name}] train_state must be a TrainState class (a subclass of "
            f"flax.training.train_state.TrainState), got {train_state!r:.80}"
        )
    extra_fields = {f.name for f in dataclasses.fields(train_state)} - {"params"}

    def variables_for(key: jax.Array) -> dict[str, Any]:
        k_params, k_dropout = jax.random.split(key)
        keys = {"params": k_params, "dropout": k_dropout}
        init = call(
            name, "module.init", lambda: module.init(keys, *init_args, **kwargs)
        )
        return _graph.linen_variables(init)

    with _graph.spot_to_linen() as wrappers:
        template = variables_for(jax.random.PRNGKey(0))
    layout = _graph.linen_layout(name, template, wrappers, halves)
    state_collections = {
        c
        for c in template
        if not issubclass(compat.collection_variable_type(str(c)) or object, nnx.Param)
    }

    def new_state(variables: Mapping[str, Any], lr: Any) -> Any:
        made = call(name, "tx", tx, lr)
        if make_state is None:
            collections = {c: variables[c] for c in variables if c in extra_fields}
            return train_state.create(  # type: ignore[union-attr]
                apply_fn=module.apply,
                params=variables["params"],
                tx=made,
                **collections,
            )
        return call(name, "make_state", make_state, variables, made)

    opt: PlainTree | None = None
    fields0 = _opt_fields(new_state(template, LR0))
    if fields0 is not None:
        opt = PlainTree.of(fields0, _opt_fields(new_state(template, LR1)))

    def keys_for(batch: Any) -> Any:
        if rngs is None:
            return {"dropout": jax.random.key(0)}
        return call(name, "rngs", rngs, batch)

    def init(key: jax.Array) -> dict[str, Any]:
        variables = variables_for(key)
        out = layout.halves(variables, after="module.init")
        if opt is not None:
            fields = _opt_fields(new_state(variables, LR0))
            out[OPT] = _plain(name, opt, fields, "tx(lr).init")
        return out

    def loss(params: Any, batch: Any) -> Any:
        variables = layout.rebuild(_model_part(params))
        return _loss_value(
            call(name, "loss_fn", loss_fn, variables, batch, keys_for(batch))
        )

    def step(params: Any, batch: Any, lr: Any) -> dict[str, Any]:
        variables = layout.rebuild(_model_part(params))
        state = new_state(variables, lr)
        if opt is not None:
            fresh_fields = _opt_fields(state)
            state = _replace(state, **opt.rebuild(params[OPT], fresh_fields))
        out = call(name, "train_step", train_step, state, batch)
        new = out[0] if type(out) is tuple else out
        if read_state is None:
            updates = _read_train_state(name, new, variables)
        else:
            updates = call(name, "read_state", read_state, new)
        new_vars = {**variables, **flax_core.unfreeze(dict(updates))}
        result = layout.halves(new_vars, after="the user's train_step")
        if opt is not None:
            fields = _opt_fields(new)
            if fields is None:
                raise TypeError(
                    f"[{name}] the state from the user's train_step has no "
                    "step/opt_state fields (the state make_state built has them)"
                )
            result[OPT] = _plain(name, opt, fields, "the user's train_step")
        return result

    def state_fn(params: Any, batch: Any) -> dict[str, Any]:
        variables = layout.rebuild(_model_part(params))
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

    auto = {"state_fn": state_fn if STATE in layout.labels else None}
    return _case(
        name,
        layout,
        tx,
        sgd,
        opt,
        auto,
        options,
        batches=batches,
        step=step,
        loss=loss,
        lr=lr,
        init=init,
        description=description or f"Linen model, halves {layout.labels}",
    )
