"""The Linen <-> NNX bridge across releases: wrappers, lazy init, collections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybridcheck.compat._versions import FLAX_VERSION, HAS_BRIDGE, feature_support, nnx


def bridge_lazy_init(wrapper: Any, *args: Any, **kwargs: Any) -> Any:
    """Creates a ``bridge.ToNNX`` wrapper's variables by running it once.

    As of Flax 0.9.0 ``nnx.bridge.lazy_init`` exists (with the bridge itself).
    """
    if not HAS_BRIDGE:
        raise NotImplementedError(feature_support()["bridge"])
    from flax.nnx import bridge

    return bridge.lazy_init(wrapper, *args, **kwargs)


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
