"""Reading and writing NNX Variables and State across releases."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax

from hybridcheck.compat._versions import FLAX_VERSION, nnx


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

    The input module is not mutated, and the new one shares no Variable with it,
    so it may be built inside ``jax.grad``/``jax.jit`` from a module made outside:
    as of Flax 0.11 ``nnx.merge`` reuses the State's Variables (``copy=False``), and
    a ``bridge.ToNNX`` or ``nnx.Dropout`` advances its ``RngCount`` on every call,
    which raises ``TraceContextError`` on a Variable of another trace level. Every
    non-parameter Variable (RNG counts and keys, statistics) is therefore copied
    too; what the call changes in the copy is dropped with it. ``nnx.split`` /
    ``nnx.merge`` exist on every supported release (0.8.4+); only the state-leaf
    accessors differ (see :func:`replace_params`).
    """
    graphdef, state, rest = nnx.split(module, nnx.Param, ...)  # type: ignore[misc]
    state = jax.tree_util.tree_map(lambda x: x, state)  # a copy we may write into
    rest = jax.tree_util.tree_map(lambda x: x, rest)  # fresh RNG state, see above
    replace_params(state, params)
    return nnx.merge(graphdef, state, rest)


def module_with_state(
    module: Any, parts: Sequence[tuple[Any, Mapping[str, Any]]]
) -> Any:
    """A new nnx Module with several variable types replaced from plain dicts.

    ``parts`` is ``[(nnx.Param, params), (nnx.BatchStat, stats), ...]``. Everything
    else (RNG streams, counters) is copied from ``module``. Same release notes as
    :func:`module_with_params`.
    """
    filters = [f for f, _ in parts]
    graphdef, *states, rest = nnx.split(module, *filters, ...)  # type: ignore[misc]
    rest = jax.tree_util.tree_map(lambda x: x, rest)  # type: ignore[arg-type]
    new_states: list[Any] = []
    for state, (_, values) in zip(states, parts, strict=True):
        state = jax.tree_util.tree_map(lambda x: x, state)
        replace_params(state, values)
        new_states.append(state)
    return nnx.merge(graphdef, *new_states, rest)  # type: ignore[arg-type]


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


def rng_state_type() -> type | None:
    """The base class of NNX RNG state Variables (``RngKey``, ``RngCount``).

    As of Flax 0.10 (measured 0.10.2-0.12.8) it is ``nnx.RngState``; an older NNX
    without it gives ``None`` (its RNG state is then ordinary state).
    """
    return getattr(nnx, "RngState", None)


def iter_submodules(module: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """``(path, submodule)`` for every nnx Module in ``module``'s graph, root included.

    As of Flax 0.12 ``nnx.iter_modules(module)`` is the function and the
    ``Module.iter_modules()`` method warns (DeprecationWarning); 0.10.2 and 0.11.2
    have only the method.
    """
    if hasattr(nnx, "iter_modules"):
        return list(nnx.iter_modules(module))
    return list(module.iter_modules())


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


def module_list(modules: Iterable[Any]) -> Any:
    """A list of nnx Modules to assign to a Module attribute (layers in a list).

    As of Flax 0.12.0 a Module is a pytree whose attributes are static unless marked
    as data, and a plain ``list`` of Modules assigned to one raises ``ValueError``
    ("Found data on value of type list assigned to static attribute"): it must be an
    ``nnx.List`` (new in 0.12.0). Before, a plain list is a graph node as it is. Either
    way the list's entries appear in the state (and :func:`params_as_dict`) under the
    integer keys ``0, 1, ...``.
    """
    if hasattr(nnx, "List"):
        return nnx.List(list(modules))
    return list(modules)
