"""NNX training objects across releases: Rngs from a traced seed, nnx.Optimizer."""

from __future__ import annotations

from typing import Any

import jax

from hybridcheck.compat._versions import FLAX_VERSION, nnx


def rngs_from_seed(seed: Any) -> Any:
    """Returns ``nnx.Rngs`` equal to ``nnx.Rngs(int(seed))`` for a traced int seed.

    As of Flax 0.8.4 (through 0.12.8) ``nnx.Rngs(int)`` turns the int into
    ``jax.random.key(int)``; an int *tracer* is rejected, so under ``jax.jit`` we
    build the typed key ourselves. ``tests/compat/test_compat.py`` checks both agree on
    every release the matrix installs.
    """
    return nnx.Rngs(jax.random.key(seed))


def make_optimizer(model: Any, tx: Any, *, wrt: Any = None) -> Any:
    """Builds ``nnx.Optimizer(model, tx, wrt=...)`` on every release.

    As of Flax 0.11.0 ``wrt`` is required (a TypeError without it); before 0.11.0
    the argument did not exist on some releases and the optimizer took all Params.
    """
    wrt = nnx.Param if wrt is None else wrt
    if FLAX_VERSION >= (0, 11, 0):
        return nnx.Optimizer(model, tx, wrt=wrt)
    return nnx.Optimizer(model, tx)  # type: ignore[call-arg]


def optimizer_tx(optimizer: Any) -> Any:
    """The optax transformation an ``nnx.Optimizer`` applies.

    As of Flax 0.8.4 (through 0.12.8) the optimizer keeps the ``tx`` it was built
    with as its ``tx`` attribute (a static field, not state).
    """
    return optimizer.tx


def optimizer_update(optimizer: Any, model: Any, grads: Any) -> None:
    """Applies ``grads`` with an ``nnx.Optimizer``.

    As of Flax 0.11.0 the call is ``optimizer.update(model, grads)``; before it was
    ``optimizer.update(grads)`` (the optimizer held the model).
    """
    if FLAX_VERSION >= (0, 11, 0):
        optimizer.update(model, grads)
    else:
        optimizer.update(grads)


def optimizer_state_type() -> type:
    """The base class of ``nnx.Optimizer``'s own Variables (step count, optax state).

    As of Flax 0.11 it is exported as ``nnx.OptState``; on 0.10.x it lives in
    ``flax.nnx.training.optimizer`` only. ``OptArray``/``OptVariable`` subclass it.
    """
    if hasattr(nnx, "OptState"):
        return nnx.OptState  # type: ignore[no-any-return]
    from flax.nnx.training import optimizer as nnx_optimizer

    return nnx_optimizer.OptState  # type: ignore[no-any-return]


def optimizer_state(optimizer: Any) -> Any:
    """An ``nnx.Optimizer``'s step count and optax state, as an ``nnx.State``.

    Before Flax 0.11 the optimizer holds the model too: the filter leaves the
    model's Variables out on every release.
    """
    return nnx.state(optimizer, optimizer_state_type())


def set_optimizer_state(optimizer: Any, state: Any) -> None:
    """Installs ``state`` (from :func:`optimizer_state`) into ``optimizer``, in place.

    ``nnx.update`` does this on every release with ``flax.nnx`` (0.8.4+).
    """
    nnx.update(optimizer, state)
