"""Every Flax/JAX release difference hybridcheck relies on, and nothing else.

This is the only module that reads ``flax.__version__``/``jax.__version__`` or probes
their APIs with ``hasattr``. Each shim is a thin function named by what it is for;
its docstring starts with the release where the behaviour moved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import jax

__all__ = [
    "FLAX_VERSION",
    "HAS_BRIDGE",
    "HAS_NNX",
    "nnx",
    "version_tuple",
    "variable_array",
    "params_as_dict",
    "replace_params",
    "module_with_params",
    "module_with_state",
    "bridge_lazy_init",
    "make_optimizer",
    "rngs_from_seed",
    "optimizer_update",
    "linen_trainable",
    "linen_static_collections",
    "feature_support",
    "enable_x64",
    "versions",
]


def version_tuple(version: str) -> tuple[int, ...]:
    """Parses ``"0.12.8"`` (or ``"0.10.0rc1"``, ``"0.4.35.dev2"``) into ``(0, 12, 8)``.

    Raises:
      ValueError: if ``version`` does not start with a dotted number.
    """
    match = re.match(r"^(\d+(?:\.\d+)*)", version)
    if match is None:
        raise ValueError(
            f"version must start with a dotted number like '0.12.8', got {version!r}"
        )
    return tuple(int(part) for part in match.group(1).split("."))


FLAX_VERSION: tuple[int, ...] = version_tuple(flax.__version__)

# As of Flax 0.8.4 NNX lives at ``flax.nnx``; 0.8.0-0.8.3 had it at
# ``flax.experimental.nnx`` with a different state API, which hybridcheck does not
# support (pyproject's floor is 0.8.4).
HAS_NNX: bool = FLAX_VERSION >= (0, 8, 4)
if not HAS_NNX:  # pragma: no cover - guarded by the dependency floor
    raise ImportError(
        f"hybridcheck needs flax>=0.8.4 (the first release with flax.nnx); "
        f"found flax {flax.__version__}. Upgrade flax together with a matching jax."
    )

from flax import nnx  # noqa: E402  (import after the version guard on purpose)

# As of Flax 0.9.0 ``flax.nnx.bridge`` (ToNNX, ToLinen, to_linen, lazy_init) exists.
HAS_BRIDGE: bool = FLAX_VERSION >= (0, 9, 0)


def feature_support() -> dict[str, str | None]:
    """Maps each optional feature to ``None`` (supported) or why it is not.

    Used by the verifier to report an invariant or case as not applicable on an old
    release instead of silently passing it.
    """
    return {
        "bridge": None
        if HAS_BRIDGE
        else f"flax.nnx.bridge first appears in Flax 0.9.0 (found {flax.__version__})",
    }


def variable_array(variable: Any) -> jax.Array:
    """Returns the array held by an nnx Variable (or passes a plain array through).

    As of Flax 0.12.1 ``Variable.get_value()`` is the accessor and ``.value`` /
    ``.raw_value`` emit a DeprecationWarning; before 0.12.1 ``.value`` is the
    accessor. ``VariableState`` (Flax < 0.11 state leaves) also uses ``.value``.
    """
    if FLAX_VERSION >= (0, 12, 1) and hasattr(variable, "get_value"):
        return variable.get_value()  # type: ignore[no-any-return]
    if isinstance(variable, nnx.Variable) or _is_variable_state(variable):
        return variable.value  # type: ignore[no-any-return]
    return variable  # type: ignore[no-any-return]


def rngs_from_seed(seed: Any) -> Any:
    """Returns ``nnx.Rngs`` equal to ``nnx.Rngs(int(seed))`` for a traced int seed.

    As of Flax 0.8.4 (through 0.12.8) ``nnx.Rngs(int)`` turns the int into
    ``jax.random.key(int)``; an int *tracer* is rejected, so under ``jax.jit`` we
    build the typed key ourselves. ``tests/test_compat.py`` checks both agree on
    every release the matrix installs.
    """
    return nnx.Rngs(jax.random.key(seed))


def _is_variable_state(obj: Any) -> bool:
    # As of Flax 0.11 ``VariableState`` is gone (State holds Variables directly; the
    # name survives as a deprecated alias, which must not be touched).
    if FLAX_VERSION >= (0, 11, 0):
        return False
    return isinstance(obj, nnx.VariableState)


def _state_to_dict(state: Any) -> Any:
    if isinstance(state, Mapping):
        return {key: _state_to_dict(value) for key, value in state.items()}
    return variable_array(state)


def params_as_dict(module: Any, filter: Any = None) -> dict[str, Any]:
    """Returns an nnx Module's parameters as a nested plain ``dict`` of arrays.

    As of Flax 0.10.4 ``nnx.to_pure_dict(state)`` does this (``State.to_pure_dict``
    from 0.10.0, deprecated in 0.10.4); older releases have neither, so the state
    mapping is walked by hand, which gives the same nested dict on every release.

    Args:
      module: an ``nnx.Module``.
      filter: which variables to take (default ``nnx.Param``).
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(
            f"module must be an nnx.Module, got {type(module).__name__}; for a Linen "
            "module the params are already a dict: use variables['params']."
        )
    _, state, _ = nnx.split(  # type: ignore[misc]
        module, nnx.Param if filter is None else filter, ...
    )
    return _state_to_dict(state)  # type: ignore[no-any-return]


def replace_params(state: Any, params: Mapping[str, Any]) -> None:
    """Writes a plain nested dict of arrays into an nnx ``State`` in place.

    As of Flax 0.10.4 ``nnx.replace_by_pure_dict`` does this; before, the State's
    leaves are set one by one (``VariableState.value``).
    """
    for key, value in params.items():
        if key not in state:
            raise ValueError(
                f"params has key {key!r} that the module's state lacks; "
                f"state keys: {sorted(map(str, state.keys()))}"
            )
        leaf = state[key]
        if isinstance(value, Mapping):
            replace_params(leaf, value)
        elif FLAX_VERSION >= (0, 12, 1) and hasattr(leaf, "set_value"):
            leaf.set_value(value)
        elif isinstance(leaf, nnx.Variable) or _is_variable_state(leaf):
            leaf.value = value
        else:
            state[key] = value


def module_with_params(module: Any, params: Mapping[str, Any]) -> Any:
    """Returns a new nnx Module equal to ``module`` but with ``params`` (pure dict).

    The input module is not mutated. ``nnx.split``/``nnx.merge`` exist on every
    supported release (0.8.4+); only the state-leaf accessors differ (see
    :func:`replace_params`).
    """
    graphdef, state, rest = nnx.split(module, nnx.Param, ...)  # type: ignore[misc]
    state = jax.tree_util.tree_map(lambda x: x, state)  # a copy we may write into
    replace_params(state, params)
    return nnx.merge(graphdef, state, rest)


def module_with_state(
    module: Any, parts: Sequence[tuple[Any, Mapping[str, Any]]]
) -> Any:
    """A new nnx Module with several variable types replaced from plain dicts.

    ``parts`` is ``[(nnx.Param, params), (nnx.BatchStat, stats), ...]``. Everything
    else (RNG streams, counters) is taken from ``module``. Same release notes as
    :func:`module_with_params`.
    """
    filters = [f for f, _ in parts]
    graphdef, *states, rest = nnx.split(module, *filters, ...)  # type: ignore[misc]
    new_states: list[Any] = []
    for state, (_, values) in zip(states, parts, strict=True):
        state = jax.tree_util.tree_map(lambda x: x, state)
        replace_params(state, values)
        new_states.append(state)
    return nnx.merge(graphdef, *new_states, rest)  # type: ignore[arg-type]


def bridge_lazy_init(wrapper: Any, *args: Any, **kwargs: Any) -> Any:
    """Creates a ``bridge.ToNNX`` wrapper's variables by running it once.

    As of Flax 0.9.0 ``nnx.bridge.lazy_init`` exists (with the bridge itself).
    """
    if not HAS_BRIDGE:
        raise NotImplementedError(feature_support()["bridge"])
    from flax.nnx import bridge

    return bridge.lazy_init(wrapper, *args, **kwargs)


def make_optimizer(model: Any, tx: Any, *, wrt: Any = None) -> Any:
    """Builds ``nnx.Optimizer(model, tx, wrt=...)`` on every release.

    As of Flax 0.11.0 ``wrt`` is required (a TypeError without it); before 0.11.0
    the argument did not exist on some releases and the optimizer took all Params.
    """
    wrt = nnx.Param if wrt is None else wrt
    if FLAX_VERSION >= (0, 11, 0):
        return nnx.Optimizer(model, tx, wrt=wrt)
    return nnx.Optimizer(model, tx)  # type: ignore[call-arg]


def optimizer_update(optimizer: Any, model: Any, grads: Any) -> None:
    """Applies ``grads`` with an ``nnx.Optimizer``.

    As of Flax 0.11.0 the call is ``optimizer.update(model, grads)``; before it was
    ``optimizer.update(grads)`` (the optimizer held the model).
    """
    if FLAX_VERSION >= (0, 11, 0):
        optimizer.update(model, grads)
    else:
        optimizer.update(grads)


def linen_trainable(variables: Mapping[str, Any]) -> Any:
    """Returns the differentiable part of a Linen (or ``ToLinen``) variables dict.

    As of Flax 0.10.6 ``ToLinen`` keeps everything under ``'params'``; 0.9.0-0.10.4
    also had an ``'nnx'`` collection (boxed leaves in 0.9.0). Only ``'params'`` is
    ever differentiated.
    """
    if "params" not in variables:
        raise ValueError(
            "variables must have a 'params' collection (the result of "
            f"module.init(...)); got collections {sorted(variables)}"
        )
    params = variables["params"]
    if FLAX_VERSION < (0, 10, 0):
        from flax.core import meta

        params = meta.unbox(params)
    return params


def linen_static_collections(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The collections of a Linen variables dict that are neither params nor state.

    As of Flax 0.10.6 a ``ToLinen`` module keeps everything under ``'params'`` and
    this is empty; on 0.9.0-0.10.4 it also has an ``'nnx'`` collection (the wrapped
    module's GraphDef) that ``apply`` needs back ("GraphDef not found in variables.
    Was the collection 'nnx' dropped somewhere?"). Pass these through unchanged.
    """
    return {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}


def versions() -> dict[str, str]:
    """The installed JAX and Flax releases and the default backend, for reports."""
    return {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "backend": jax.default_backend(),
    }


def enable_x64() -> Any:
    """Returns a context manager under which JAX computes in 64 bits.

    As of JAX 0.8 (roughly) ``jax.enable_x64(True)`` is that context manager and
    ``jax.experimental.enable_x64`` is gone; older JAX has only the experimental one.
    """
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as _enable_x64  # type: ignore[attr-defined]

    return _enable_x64()


# --- real-model shims (issue 11) ---


def is_state_variable(obj: Any) -> bool:
    """Whether ``obj`` is one variable of an ``nnx.State`` (for ``is_leaf=``).

    As of Flax 0.11.0 a State holds the ``nnx.Variable`` objects themselves; before,
    it held ``nnx.VariableState`` copies.
    """
    return isinstance(obj, nnx.Variable) or _is_variable_state(obj)


def state_variable_type(obj: Any) -> type:
    """The Variable class (``nnx.Param``, ``nnx.BatchStat``, ...) of a State entry.

    As of Flax 0.11.0 the entry is the Variable (its class is the type); before,
    a ``VariableState`` names the class in ``.type``.
    """
    if _is_variable_state(obj):
        return obj.type  # type: ignore[no-any-return]
    return type(obj)


def iter_submodules(module: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """``(path, submodule)`` for every nnx Module in ``module``'s graph, root included.

    As of Flax 0.12 ``nnx.iter_modules(module)`` is the function and the
    ``Module.iter_modules()`` method warns (DeprecationWarning); 0.10.2 and 0.11.2
    have only the method.
    """
    if hasattr(nnx, "iter_modules"):
        return list(nnx.iter_modules(module))
    return list(module.iter_modules())


def bridge_wrapper_types() -> tuple[Any, Any]:
    """``(bridge.ToNNX, bridge.ToLinen)``, or ``(None, None)`` without a bridge.

    As of Flax 0.9.0 ``flax.nnx.bridge`` exists; ``bridge.to_linen(...)`` builds a
    ``ToLinen`` (and ``nn.vmap`` over it a subclass of ``ToLinen``).
    """
    if not HAS_BRIDGE:
        return None, None
    from flax.nnx import bridge

    return bridge.ToNNX, bridge.ToLinen


def collection_variable_type(collection: str) -> type | None:
    """The nnx Variable class registered for a Linen collection name, or ``None``.

    As of Flax 0.11 the registry is ``flax.nnx.variablelib.VariableTypeCache``
    (``nnx.register_variable_name``); on 0.9.0-0.10.x the bridge keeps its own,
    ``flax.nnx.bridge.variables.VariableTypeCache`` (0.10.2 also has an empty one
    in ``variablelib``). ``ToLinen`` registers a Variable class under its class
    name when it first stores one (so ``nnx.LoRAParam`` lands in a collection named
    ``"LoRAParam"``). Before 0.9.0 only ``"params"`` is known. Reading never
    registers.
    """
    if collection == "params":
        return nnx.Param  # type: ignore[no-any-return]
    caches = [getattr(getattr(nnx, "variablelib", None), "VariableTypeCache", None)]
    if HAS_BRIDGE:
        from flax.nnx.bridge import variables as bridge_variables

        caches.append(getattr(bridge_variables, "VariableTypeCache", None))
    found = [cache[collection] for cache in caches if cache and collection in cache]
    return found[0] if found else None


def drop_intermediates(module: Any) -> None:
    """Removes sown ``nnx.Intermediate`` variables from an nnx Module, in place.

    As of Flax 0.10 (measured 0.10.2-0.12.8) ``nnx.pop(module, nnx.Intermediate)``
    does this; a Linen ``sow`` through ``bridge.ToNNX`` called with ``mutable=True``
    adds such a variable on the first call. Older NNX is assumed to have the
    ``Module.pop`` method (not measured).
    """
    if hasattr(nnx, "pop"):
        nnx.pop(module, nnx.Intermediate)
    else:
        module.pop(nnx.Intermediate)


def rng_state_type() -> type | None:
    """The base class of NNX RNG state Variables (``RngKey``, ``RngCount``).

    As of Flax 0.10 (measured 0.10.2-0.12.8) it is ``nnx.RngState``; an older NNX
    without it gives ``None`` (its RNG state is then ordinary state).
    """
    return getattr(nnx, "RngState", None)


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
