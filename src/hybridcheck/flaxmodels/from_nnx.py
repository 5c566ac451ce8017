"""An NNX model and the user's train step as a case: a fresh model per call.

See ``functionalize.py`` for the halves and the automatic fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import jax

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.describe.fields import given
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.usercode import call, check_common
from hybridcheck.flaxmodels import graph as _graph
from hybridcheck.flaxmodels import specs as model_specs
from hybridcheck.flaxmodels.functional import (
    Functional,
    Patterns,
    check_options,
    loss_value,
)
from hybridcheck.flaxmodels.halves import OPT, RNG
from hybridcheck.flaxmodels.opt_half import (
    LR0,
    LR1,
    PlainTree,
    model_part,
    plain_opt_state,
)
from hybridcheck.flaxmodels.optimizers import (
    check_optimizer_args,
    common_tx,
    lr_plan,
)

__all__ = ["from_nnx"]


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
    batches: Any,
    tx: Callable[[Any], Any] | None = None,
    optimizer_fn: Callable[[Any, Any], Any] | None = None,
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
      batches: a Hypothesis strategy of batches, or ``batch_fn(key)``.
      tx: a function of the learning rate: ``optax.sgd``, ``lambda lr: optax.adam(lr)``.
        Each step builds ``nnx.Optimizer(model, tx(lr), wrt=...)`` afresh and
        installs the ``opt`` half (the state the previous step left) into it.
      optimizer_fn: instead of ``tx``/``wrt``, your own construction:
        ``optimizer_fn(model, lr) -> nnx.Optimizer``, e.g. ``lambda model, lr:
        nnx.Optimizer(model, optax.adamw(schedule(lr)), wrt=nnx.Param)``: any
        optax transformation, schedule and ``wrt``. Each step calls it afresh and
        installs the ``opt`` half; ``tx`` (for ``update_matches_tx``) is the one
        it builds. Where it cannot be built from a traced lr (optax checks some
        schedule arguments in Python), it gets ``lr`` if that is a number, else
        ``optimizers.FIXED_LR``, in every step.
      halves: ``{label: pattern(s)}`` over '/'-joined parameter paths, overriding
        the automatic labels (``{"encoder": "encoder/*"}``).
      wrt: with ``tx``, the optimizer's filter, as in your code (default
        ``nnx.Param``; e.g. ``nnx.LoRAParam`` to fine-tune LoRA only: mark the rest
        ``frozen``).
      stochastic: whether the model draws randomness from its RNG state in training
        (enables ``randomness_is_used``). Default: an ``nnx.Dropout`` or Linen
        ``nn.Dropout`` with ``rate > 0`` is in the model (see the module doc).
      lr, description, options: passed to :class:`HybridCase` (``frozen``,
        ``extra_checks``, ``param_seeds``, or any automatic field to override);
        ``sgd`` defaults to ``tx is optax.sgd``.

    Raises:
      TypeError, ValueError: bad arguments (both or neither of ``tx`` and
        ``optimizer_fn``), or fewer than two trainable halves.
      UserCodeError: ``model_fn``/``loss_fn``/``train_step``/``tx``/
        ``optimizer_fn`` raised.

    Example:
      >>> case = from_nnx("mine", model_fn=make, loss_fn=loss, train_step=step,
      ...                 tx=optax.sgd, batches=my_batches)
      >>> case = from_nnx("mine", model_fn=make, loss_fn=loss, train_step=step,
      ...                 optimizer_fn=lambda model, lr: nnx.Optimizer(
      ...                     model, optax.adamw(lr), wrt=nnx.Param),
      ...                 batches=my_batches)
    """
    check_optimizer_args(
        name,
        "from_nnx",
        tx=tx,
        factory=optimizer_fn,
        factory_name="optimizer_fn",
        example="lambda model, lr: nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)",
        not_with={"wrt": wrt},
    )
    check_common(
        name,
        halves,
        common_tx(tx),
        model_fn=model_fn,
        loss_fn=loss_fn,
        train_step=train_step,
    )
    if isinstance(model_fn, nnx.Module):
        raise TypeError(
            f"[{name}] model_fn must be a function rngs -> nnx.Module, got the "
            f"{type(model_fn).__name__} instance itself; write model_fn=lambda rngs: "
            f"nnx.bridge.lazy_init({type(model_fn).__name__}(rngs), example_input): "
            "every init builds a fresh model"
        )
    check_options(name, "from_nnx", "model_fn", batches, options)
    make_tx = cast(Callable[[Any], Any], tx)  # given where no factory builds it
    if stochastic is not None and not isinstance(stochastic, bool):
        raise TypeError(
            f"[{name}] stochastic must be True, False or None (None: look for "
            f"Dropout layers), got {given(stochastic)}"
        )
    with _graph.spot_linen_dropout() as linen_calls:
        template = _build_nnx(name, model_fn, jax.random.PRNGKey(0))
    dropouts = [m for m in linen_calls if m is not None]
    unbuilt = _graph.unbuilt_to_nnx(template, len(linen_calls))
    if unbuilt:
        raise ValueError(
            f"[{name}] model_fn returned a model whose bridge.ToNNX ({unbuilt}) "
            "never ran its Linen module, so it holds no Linen parameters: call "
            "bridge.lazy_init in model_fn (model_fn=lambda rngs: "
            "nnx.bridge.lazy_init(Model(rngs), example_input))"
        )
    graphdef = nnx.split(template)[0]
    layout = _graph.nnx_layout(name, template, halves)
    wrt = nnx.Param if wrt is None else wrt

    def fresh(params: Any) -> Any:
        return nnx.merge(graphdef, layout.rebuild(model_part(params)))

    def model_halves(model: Any, after: str) -> dict[str, Any]:
        compat.drop_intermediates(model)
        return layout.halves(nnx.split(model)[1], after=after)

    def build_optimizer(model: Any, lr: Any) -> Any:
        if optimizer_fn is None:
            return compat.make_optimizer(model, call(name, "tx", make_tx, lr), wrt=wrt)
        made = call(name, "optimizer_fn", optimizer_fn, model, lr)
        if not isinstance(made, nnx.Optimizer):
            raise TypeError(
                f"[{name}] optimizer_fn(model, lr) must return an nnx.Optimizer "
                f"built on the model it is given, got {given(made)}"
            )
        return made

    params0 = model_halves(template, "model_fn")
    plan = lr_plan(
        name,
        "tx" if optimizer_fn is None else "optimizer_fn",
        lambda lr: compat.optimizer_state(build_optimizer(fresh(params0), lr)),
        lr,
    )

    def optimizer_for(model: Any, lr: Any) -> Any:
        return build_optimizer(model, plan.used(lr))

    def opt_state_at(lr: float) -> Any:
        return compat.optimizer_state(optimizer_for(template, lr))

    def tx_at(lr: Any) -> Any:  # the optax transformation a step applies
        if optimizer_fn is None:
            return call(name, "tx", make_tx, plan.used(lr))
        return compat.optimizer_tx(optimizer_for(template, lr))

    found = PlainTree.of(opt_state_at(LR0), opt_state_at(LR1))
    opt = found if found.keys else None

    def init(key: jax.Array) -> dict[str, Any]:
        model = _build_nnx(name, model_fn, key)
        out = model_halves(model, "model_fn")
        if opt is not None:
            state = compat.optimizer_state(optimizer_for(model, LR0))
            out[OPT] = plain_opt_state(name, opt, state, "tx(lr).init")
        return out

    def loss(params: Any, batch: Any) -> Any:
        return loss_value(call(name, "loss_fn", loss_fn, fresh(params), batch))

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
            out[OPT] = plain_opt_state(name, opt, state, "the user's train_step")
        return out

    def state_fn(params: Any, batch: Any) -> dict[str, Any]:
        model = fresh(params)
        call(name, "loss_fn", loss_fn, model, batch)
        out = model_halves(model, "the user's loss_fn")
        return {h: out[h] for h in layout.non_trainable}

    def reseed(params: Any, batch: Any, key: Any) -> tuple[Any, Any]:
        return {**params, **layout.reseed(model_part(params), key)}, batch

    has_rng = RNG in layout.labels
    if stochastic is None:
        stochastic = _graph.nnx_stochastic(template, len(dropouts))
    auto = {
        "state_fn": state_fn if layout.non_trainable else None,
        "reseed": reseed if has_rng and stochastic else None,
        "rng_halves": (RNG,) if has_rng else None,
        "partition_specs": model_specs.nnx_specs(layout, template),
    }
    made = Functional(layout, opt, init, loss, step, auto)
    return made.case(
        "NNX",
        name,
        tx if optimizer_fn is None and plan.fixed is None else tx_at,
        sgd,
        batches,
        plan.case_lr,
        description,
        options,
        given=tx,
    )
