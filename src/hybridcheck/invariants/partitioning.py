"""The migrated model keeps the partitioning of every converted parameter.

Losing a parameter's partitioning in a migration is silent on one device: the
model computes the same numbers, only replicated (or split along another axis)
once it runs on many. So the placement is compared element by element (see
``hybridcheck._partitioning``), and the migrated step on a device mesh must equal
its unsharded step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from hybridcheck._typing import PyTree
from hybridcheck.invariants._tree import fail, leaves

__all__ = ["Placement", "MESH_RTOL", "assert_sharding_matches_before"]

MESH_RTOL = 1e-10
"""float64 relative deviation of the mesh step from the unsharded step: partitioned
contractions reduce in another order (~1e-15); five orders of headroom."""


class Placement(NamedTuple):
    """Where one after leaf's elements live compared with their sources.

    Attributes:
      path: the after leaf.
      actual: its PartitionSpec (mesh axes) as the after side declares it.
      expected: a PartitionSpec that would place every element where its source
        lived (``None`` when no spec does, or it was not searched).
      sources: the before leaves it copies, each with its PartitionSpec.
      misplaced: how many of its elements would live on other devices.
      size: how many of its elements come from a before element.
    """

    path: str
    actual: Any
    expected: Any
    sources: tuple[str, ...]
    misplaced: int
    size: int


HINT = (
    "Give the after parameter the partitioning of its source, permuted like the "
    "converter permutes the array (a transposed kernel takes transposed names): "
    "nnx.with_partitioning(init, names) or the Variable metadata (out_sharding= "
    "from Flax 0.12.4, sharding_names= in 0.11.2-0.12.3, sharding= before), or "
    "declare it in MigrationCase.after_specs. A mesh step that differs from the "
    "unsharded step means the model computes per shard (a sharding constraint or "
    "shard_map with the wrong axes)."
)


def assert_sharding_matches_before(
    placements: Sequence[Placement],
    single: PyTree = None,
    sharded: PyTree = None,
    *,
    rtol: float = MESH_RTOL,
) -> None:
    """Every after element lives where its before element lived; the mesh step
    equals the unsharded one.

    Args:
      placements: one per after leaf (``hybridcheck._partitioning.placements``).
      single, sharded: the after step's new params unsharded and on the mesh
        (float64), or both ``None`` to compare placements only.
      rtol: relative float64 tolerance per leaf for the mesh step.

    Raises:
      AssertionError: naming each misplaced after leaf (its spec, the spec that
        would fix it, its sources) and each leaf of the mesh step that differs.
    """
    problems = []
    for p in placements:
        if not p.misplaced:
            continue
        fix = (
            f"expected {p.expected}"
            if p.expected is not None
            else "no PartitionSpec of this leaf reproduces its source's placement"
        )
        problems.append(
            f"after leaf {p.path}: partitioned {p.actual}, {fix} (source "
            f"{', '.join(p.sources)}): {p.misplaced} of {p.size} elements would be "
            "placed on other devices than their source"
        )
    if (single is None) != (sharded is None):
        raise ValueError("pass both single and sharded, or neither")
    if single is not None:
        got = dict(leaves(sharded))
        for path, want in leaves(single):
            a = np.asarray(want, np.float64)
            b = np.asarray(got.get(path, np.nan), np.float64)
            if a.shape != b.shape:
                problems.append(f"mesh step leaf {path}: shape {b.shape} != {a.shape}")
                continue
            diff = float(np.sqrt(np.sum(np.square(b - a))))
            size = max(float(np.sqrt(np.sum(np.square(a)))), np.finfo(float).tiny)
            if not diff <= rtol * size:
                problems.append(
                    f"mesh step leaf {path}: relative deviation {diff / size:.3g} "
                    f"from the unsharded step (float64, tolerance {rtol:g})"
                )
    fail("sharding_matches_before", problems, HINT)
