"""An NNX model and the user's train step as a case: a fresh model per call.

See ``functionalize.py`` for the halves and the automatic fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    if isinstance(model_fn, nnx.Module):
        raise TypeError(
            f"[{name}] model_fn must be a function rngs -> nnx.Module, got the "
            f"{type(model_fn).__name__} instance itself; write model_fn=lambda rngs: "
            f"nnx.bridge.lazy_init({type(model_fn).__name__}(rngs), example_input): "
            "every init builds a fresh model"
        )
    check_options(name, "from_nnx", "model_fn", batches, options)
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

    def optimizer_for(model: Any, lr: Any) -> Any:
        return compat.make_optimizer(model, call(name, "tx", tx, lr), wrt=wrt)

    def opt_state_at(lr: float) -> Any:
        return compat.optimizer_state(optimizer_for(template, lr))

    found = PlainTree.of(opt_state_at(LR0), opt_state_at(LR1))
    opt = found if found.keys else None

    def fresh(params: Any) -> Any:
        return nnx.merge(graphdef, layout.rebuild(model_part(params)))

    def model_halves(model: Any, after: str) -> dict[str, Any]:
        compat.drop_intermediates(model)
        return layout.halves(nnx.split(model)[1], after=after)

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
    return made.case("NNX", name, tx, sgd, batches, lr, description, options)
