"""The partitioning a real model declares, laid out like its case's params.

``from_linen`` and ``from_nnx`` split a model's variables into halves of plain arrays
(``_halves.Layout``), so the partitioning read from the model (Linen
``nn.with_partitioning`` / ``nn.with_logical_partitioning`` boxes, NNX
``nnx.with_partitioning`` Variable metadata; readers in ``compat._sharding``) has
the structure of the model's variables, not of the case's params. A
:class:`ModelSpecs` moves each declared spec to the place its leaf takes in the
halves; every other leaf of the params (the ``opt`` half, RNG state, a leaf without
metadata) is ``None``, replicated. It becomes ``HybridCase.partition_specs``, which
``MigrationCase`` reads for a side whose specs it is not given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import PartitionSpec

from hybridcheck import compat
from hybridcheck.flaxmodels.halves import Layout, path_entry, path_str

__all__ = ["ModelSpecs", "linen_specs", "nnx_specs"]


@dataclasses.dataclass(frozen=True)
class ModelSpecs:
    """``specs(params)``: the declared PartitionSpec of each leaf of a case's params.

    Attributes:
      at: ``{(half, *key): spec}`` for each leaf that declares a partitioning.
      source: where the specs were read, for reports.
    """

    at: Mapping[tuple[str, ...], PartitionSpec]
    source: str

    def __call__(self, params: Any) -> Any:
        """A pytree with the structure of ``params``: a spec or ``None`` per leaf."""

        def spec(keypath: Any, _: Any) -> PartitionSpec | None:
            return self.at.get(tuple(str(path_entry(k)) for k in keypath))

        return jax.tree_util.tree_map_with_path(spec, params)


def _on_halves(
    layout: Layout, declared: Mapping[str, PartitionSpec], source: str
) -> ModelSpecs | None:
    """``declared`` (by the template leaf's '/'-joined path) moved onto the halves;
    ``None`` when no leaf is partitioned."""
    at = {
        (slot.half, *slot.key): declared[path]
        for slot, path in zip(layout.slots, layout.paths, strict=True)
        if slot.half is not None and len(declared.get(path, ()))
    }
    return ModelSpecs(at, source) if at else None


def linen_specs(layout: Layout, boxed: Any) -> ModelSpecs | None:
    """The specs of a Linen model from ``module.init``'s boxed variables.

    ``None`` when no variable is boxed with a partitioning, or the installed Flax
    cannot read one (``compat.sharding_support``).
    """
    if compat.sharding_support() is not None:
        return None
    flat = jax.tree_util.tree_flatten_with_path(
        compat.linen_partition_specs(boxed),
        is_leaf=lambda s: isinstance(s, PartitionSpec),
    )[0]
    declared = {path_str([path_entry(k) for k in kp]): s for kp, s in flat}
    return _on_halves(
        layout,
        declared,
        "read from the Linen model's nn.with_partitioning / "
        "nn.with_logical_partitioning boxes",
    )


def nnx_specs(layout: Layout, model: Any) -> ModelSpecs | None:
    """The specs of an NNX model from its Variables' partitioning metadata.

    Every Variable is read (a ``BatchStat`` may declare one too); one holding
    several arrays (a sown tuple) is replicated. ``None`` as in :func:`linen_specs`.
    """
    if compat.sharding_support() is not None:
        return None
    state = compat.nnx.split(model)[1]
    flat = jax.tree_util.tree_flatten_with_path(
        state, is_leaf=compat.is_state_variable
    )[0]
    declared = {
        path_str([path_entry(k) for k in kp]): PartitionSpec(*names)
        for kp, var in flat
        if compat.is_state_variable(var)
        and (names := compat.nnx_sharding_names(var)) is not None
    }
    return _on_halves(
        layout,
        declared,
        f"read from the NNX model's Variable metadata ({compat.NNX_SHARDING_KEY})",
    )
