"""Reading a real model: which variables are trainable, which bridge wrapper holds each.

* NNX: the leaves of ``nnx.split(model)``'s State. ``nnx.Param`` and its subclasses
  (``nnx.LoRAParam``) are trainable; under a ``bridge.ToNNX`` submodule at ``path``
  they form the half ``linen:<path>`` (keys relative to the wrapper), elsewhere the
  half ``nnx``.
* Linen: the leaves of ``module.init(...)``'s variables dict. ``params`` (and any
  collection registered to a Param subclass, e.g. ``LoRAParam`` from ``to_linen``)
  is trainable; under a ``bridge.ToLinen`` at ``path`` it forms ``nnx:<path>``
  (``{collection: {...}}`` relative to the wrapper), elsewhere ``linen``.

Everything else is state (see ``_plan.plan``); NNX RNG state (subclasses of
``nnx.RngState``: ``RngKey``, ``RngCount``) is a half of its own, ``rng``.

Whether a model is *stochastic* (:func:`nnx_stochastic`): it holds an
``nnx.Dropout`` with ``rate > 0``, or a Linen ``nn.Dropout`` with ``rate > 0`` ran
inside it while ``model_fn`` built it (under ``bridge.ToNNX``: ``lazy_init`` runs
the Linen module). Any other layer that draws randomness is not seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import jax
from flax import core as flax_core
from flax import linen as nn
from flax.core import meta

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.flaxmodels.halves import RNG, STATE, Layout, path_entry, path_str
from hybridcheck.flaxmodels.plan import Entry, plan

__all__ = [
    "linen_layout",
    "linen_variables",
    "nnx_layout",
    "nnx_stochastic",
    "spot_linen_dropout",
    "spot_to_linen",
    "unbuilt_to_nnx",
]


def _longest_prefix(path: tuple[Any, ...], prefixes: list[tuple[Any, ...]]) -> Any:
    return next((p for p in prefixes if path[: len(p)] == p), None)


def nnx_layout(case: str, model: Any, halves: Any) -> Layout:
    """The :class:`Layout` of an nnx Module's whole state."""
    state = nnx.split(model)[1]
    to_nnx, _ = compat.bridge_wrapper_types()
    found = [
        tuple(path)
        for path, sub in compat.iter_submodules(model)
        if to_nnx is not None and isinstance(sub, to_nnx)
    ]
    wrappers = sorted(found, key=len, reverse=True)
    entries = []
    flat = jax.tree_util.tree_flatten_with_path(state, is_leaf=compat.is_state_variable)
    for keypath, var in flat[0]:
        vpath = tuple(path_entry(k) for k in keypath)
        vtype = (
            compat.state_variable_type(var) if compat.is_state_variable(var) else None
        )
        trainable = vtype is not None and issubclass(vtype, nnx.Param)
        rng_type = compat.rng_state_type()
        is_rng = (
            vtype is not None and rng_type is not None and issubclass(vtype, rng_type)
        )
        sub = jax.tree_util.tree_flatten_with_path(var)[0]
        for subpath, value in sub:
            # A Variable holding one array is one leaf at the Variable's path; one
            # holding a tuple (Linen sow) adds the index.
            extra = [path_entry(k) for k in subpath]
            extra = extra[1:] if extra[:1] == ["value"] else extra
            path = vpath if len(sub) == 1 else vpath + tuple(extra)
            prefix = _longest_prefix(path, wrappers)
            if prefix is None:
                auto: tuple[str, tuple[Any, ...]] = ("nnx", path)
            else:
                label = f"linen:{path_str(prefix)}" if prefix else "linen"
                auto = (label, path[len(prefix) :])
            entries.append(
                Entry(
                    path, value, trainable, *auto, state_half=RNG if is_rng else STATE
                )
            )
    leaves, treedef = jax.tree.flatten(state)
    if len(leaves) != len(entries):  # pragma: no cover - a hybridcheck bug
        raise RuntimeError(f"[{case}] could not line up the model's state leaves")
    return plan(case, treedef, entries, halves, leaf_paths=_var_paths)


def _var_paths(state: Any) -> set[str]:
    flat = jax.tree_util.tree_flatten_with_path(state, is_leaf=compat.is_state_variable)
    return {path_str([path_entry(k) for k in keypath]) for keypath, _ in flat[0]}


def nnx_stochastic(model: Any, linen_dropouts: int = 0) -> bool:
    """Whether ``model`` holds a stochastic layer (see the module doc).

    Args:
      model: the template nnx Module.
      linen_dropouts: how many Linen ``nn.Dropout`` with ``rate > 0`` ran while the
        model was built (:func:`spot_linen_dropout`).
    """
    if linen_dropouts:
        return True
    return any(
        isinstance(sub, nnx.Dropout) and float(sub.rate) > 0
        for _, sub in compat.iter_submodules(model)
    )


@contextlib.contextmanager
def spot_linen_dropout() -> Iterator[list[Any]]:
    """Collects every Linen ``nn.Dropout`` with ``rate > 0`` called inside the block
    (in training or in eval mode: eval mode left on in training is a bug to catch),
    and ``None`` once for every other Linen module called (:func:`unbuilt_to_nnx`)."""
    seen: list[Any] = []

    def spot(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        module: Any = context.module
        dropout = isinstance(module, nn.Dropout) and float(module.rate) > 0
        seen.append(module if dropout else None)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(spot):
        yield seen


def unbuilt_to_nnx(model: Any, linen_calls: int) -> list[str]:
    """The paths of ``model``'s ``bridge.ToNNX`` wrappers when no Linen module ran
    while it was built (``linen_calls == 0``): a ToNNX creates its Linen variables
    on its first call, so without ``bridge.lazy_init`` they hold none."""
    to_nnx, _ = compat.bridge_wrapper_types()
    if to_nnx is None or linen_calls:
        return []
    return [
        path_str(path) or "the model itself"
        for path, sub in compat.iter_submodules(model)
        if isinstance(sub, to_nnx)
    ]


def linen_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """``module.init``'s result as plain nested dicts of unboxed arrays, without
    the sown ``intermediates``."""
    plain = flax_core.unfreeze(meta.unbox(variables))
    plain.pop("intermediates", None)  # sown values are outputs, not state
    return {**plain, "params": compat.linen_trainable(plain)}


@contextlib.contextmanager
def spot_to_linen() -> Iterator[list[tuple[Any, ...]]]:
    """Collects the scope path of every ``bridge.ToLinen`` called inside the block."""
    _, to_linen = compat.bridge_wrapper_types()
    paths: list[tuple[Any, ...]] = []

    def spot(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        module: Any = context.module
        if to_linen is not None and isinstance(module, to_linen):
            paths.append(tuple(module.scope.path))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(spot):
        yield paths


def linen_layout(
    case: str, variables: dict[str, Any], wrappers: list[tuple[Any, ...]], halves: Any
) -> Layout:
    """The :class:`Layout` of a Linen variables dict (``ToLinen`` at ``wrappers``)."""
    ordered = sorted(set(wrappers), key=len, reverse=True)
    entries = []
    flat, treedef = jax.tree_util.tree_flatten_with_path(variables)
    for keypath, value in flat:
        path = tuple(path_entry(k) for k in keypath)
        collection, rest = path[0], path[1:]
        vtype = compat.collection_variable_type(str(collection))
        trainable = vtype is not None and issubclass(vtype, nnx.Param)
        prefix = _longest_prefix(rest, ordered)
        if prefix is None:
            auto: tuple[str, tuple[Any, ...]] = ("linen", path)
        else:
            label = f"nnx:{path_str(prefix)}" if prefix else "nnx"
            auto = (label, (collection, *rest[len(prefix) :]))
        entries.append(Entry(path, value, trainable, *auto))
    return plan(case, treedef, entries, halves)
