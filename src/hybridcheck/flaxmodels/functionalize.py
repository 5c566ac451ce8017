"""Cases from the objects users have: a real NNX or Linen model and its real train step.

:func:`from_nnx` and :func:`from_linen` turn a model factory, the user's loss and the
user's own training step into a functional :class:`~hybridcheck.HybridCase`:
``init(key) -> {half: {...plain arrays}}``, ``loss(params, batch)`` and
``step(params, batch, lr)``. Each call rebuilds a *fresh* model from the arrays (new
Variables, nothing shared between traces), so the case works under ``jax.jit``,
``jax.disable_jit()`` and ``jax.grad``.

Halves (``graph``): ``nnx`` / ``linen:<ToNNX path>`` / ``linen`` /
``nnx:<ToLinen path>`` for parameters, then the non-trainable ones:

* ``state``: BatchNorm statistics, counters, Linen mutable collections;
* ``rng``: NNX RNG state (``nnx.RngKey`` as ``uint32`` key data, ``nnx.RngCount``);
* ``opt``: the optimizer's state (``nnx.Optimizer``'s step and optax state, or a
  ``TrainState``'s ``step`` and ``opt_state``), threaded from step to step: each step
  builds the optimizer (from ``tx(lr)``, or by the user's own ``optimizer_fn`` /
  ``train_state_fn``; see ``optimizers``) and installs this half into it.

The case also gets what the training-loop invariants need:

* ``tx``: the ``tx`` given, or the one the user's factory builds
  (``update_matches_tx``, and what each step's update is judged against), where the
  optimizer state is threaded (always for NNX; for Linen when the state has
  ``step``/``opt_state``);
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
  key travels in the batch, pass ``reseed=`` yourself (a HybridCase field);
* ``partition_specs`` (``sharding_matches_before`` of a MigrationCase side): the
  model's declared partitioning (Linen ``nn.with_partitioning`` /
  ``nn.with_logical_partitioning`` boxes, NNX ``nnx.with_partitioning`` metadata)
  laid out on the halves, ``None`` where a leaf declares none (``specs``).

Every automatic field can be overridden by passing it (``tx=``, ``state_fn=``,
``reseed=``, ``rng_halves=``, ``partition_specs=`` ... as keyword options; ``None``
switches it off).
"""

from __future__ import annotations

from hybridcheck.describe.usercode import UserCodeError
from hybridcheck.flaxmodels.from_linen import from_linen
from hybridcheck.flaxmodels.from_nnx import from_nnx

__all__ = ["UserCodeError", "from_linen", "from_nnx"]
