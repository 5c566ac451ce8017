"""Reading the partitioning a model declares (Linen boxes, NNX Variable metadata).

Measured from the released wheels (``flax/nnx/spmd.py``, ``flax/nnx/variablelib.py``):

* The NNX metadata key that ``nnx.with_partitioning`` writes was ``sharding`` up to
  Flax 0.11.1, ``sharding_names`` in 0.11.2-0.12.3 (``sharding`` silently remapped),
  and is ``out_sharding`` from 0.12.4 (both old keys remapped with a
  DeprecationWarning, and the ``Variable.sharding_names`` property warns).
* As of Flax 0.12.0 a Variable created with that metadata is sharded eagerly
  (``flax_always_shard_variable``, default True) and raises without a mesh; 0.12.1
  added the ``nnx.use_eager_sharding(False)`` context to create it unsharded.
* Linen's ``nn.with_partitioning`` boxes (``nn.Partitioned``) and
  ``nn.get_partition_spec`` exist on every supported release.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import flax
import jax
from flax import linen as nn
from jax.sharding import PartitionSpec

from hybridcheck.compat._versions import FLAX_VERSION, nnx

__all__ = [
    "NNX_SHARDING_KEY",
    "linen_partition_specs",
    "nnx_partition_specs",
    "nnx_sharding_names",
    "sharding_support",
    "unsharded_variables",
]

if FLAX_VERSION >= (0, 12, 4):
    NNX_SHARDING_KEY = "out_sharding"
elif FLAX_VERSION >= (0, 11, 2):
    NNX_SHARDING_KEY = "sharding_names"
else:
    NNX_SHARDING_KEY = "sharding"
"""The NNX Variable metadata key holding its partitioning names on this release."""


def sharding_support() -> str | None:
    """``None`` if partitioning can be read on this release, else why not.

    As of Flax 0.8.4 (the floor) ``nnx.with_partitioning`` and Linen's
    ``nn.get_partition_spec`` exist; this probes them rather than assuming.
    """
    missing = [
        name
        for owner, name in (
            (nnx, "with_partitioning"),
            (nn, "get_partition_spec"),
            (nn, "logical_to_mesh_axes"),
        )
        if not hasattr(owner, name)
    ]
    if missing:
        return (
            f"Flax {flax.__version__} lacks {', '.join(missing)}: partitioning "
            "cannot be read on this release"
        )
    return None


def nnx_sharding_names(variable: Any) -> tuple[Any, ...] | None:
    """The partitioning names an NNX Variable carries (``None``: it declares none).

    As of Flax 0.12.4 the metadata key is ``out_sharding``; 0.11.2-0.12.3
    ``sharding_names``; before, ``sharding`` (see :data:`NNX_SHARDING_KEY`). The
    metadata mapping is read, not the deprecated attribute, so no warning is raised.
    """
    if hasattr(variable, "get_metadata"):
        metadata = variable.get_metadata()
    else:  # pragma: no cover - VariableState of old releases keeps it in vars()
        metadata = vars(variable)
    names = metadata.get(NNX_SHARDING_KEY) if isinstance(metadata, Mapping) else None
    return tuple(names) if names else None


def nnx_partition_specs(module: Any) -> dict[str, Any]:
    """An NNX module's ``nnx.Param`` partitioning as a nested dict of PartitionSpec.

    The same structure as :func:`hybridcheck.compat.params_as_dict`; a Param without
    partitioning metadata gets ``PartitionSpec()`` (replicated). Names are returned
    as declared (logical names go through ``MigrationCase.axis_rules``).
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(
            f"module must be an nnx.Module, got {type(module).__name__}; for Linen "
            "variables use linen_partition_specs(variables)"
        )
    _, state, _ = nnx.split(module, nnx.Param, ...)  # type: ignore[misc]

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {key: walk(value) for key, value in node.items()}
        return PartitionSpec(*(nnx_sharding_names(node) or ()))

    return walk(state)  # type: ignore[no-any-return]


def linen_partition_specs(variables: Any) -> Any:
    """Linen variables' partitioning (``nn.with_partitioning`` boxes) as PartitionSpecs.

    ``variables`` is what ``module.init`` returns (boxed; ``jax.eval_shape`` of it
    is enough); the result has the structure of the unboxed variables, with
    ``PartitionSpec()`` for unboxed leaves. ``nn.with_logical_partitioning`` gives
    logical names, mapped through ``MigrationCase.axis_rules``.
    """
    return jax.tree.map(
        lambda s: s if isinstance(s, PartitionSpec) else PartitionSpec(),
        nn.get_partition_spec(variables),
        is_leaf=lambda s: isinstance(s, PartitionSpec),
    )


@contextlib.contextmanager
def unsharded_variables() -> Iterator[None]:
    """A context in which NNX Variables with partitioning metadata are created
    without being placed on a mesh (the metadata is kept).

    As of Flax 0.12.1 that is ``nnx.use_eager_sharding(False)``; 0.12.0 has only
    the ``flax_always_shard_variable`` flag (flipped temporarily); before 0.12.0
    Variables were never sharded at creation.
    """
    if hasattr(nnx, "use_eager_sharding"):
        with nnx.use_eager_sharding(False):
            yield
    elif FLAX_VERSION >= (0, 12, 0):
        with flax.config.temp_flip_flag("always_shard_variable", False):
            yield
    else:
        yield
