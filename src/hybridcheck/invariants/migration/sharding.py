"""The converted params keep their source's partitioning, and the after step on a
mesh equals the unsharded step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat
from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.migration_case import MigrationSubject
from hybridcheck.describe.specs import Specs, mesh_axes
from hybridcheck.describe.subject import Example, to64
from hybridcheck.describe.trees import (
    InvariantNotApplicable,
    fail,
    leaves,
)
from hybridcheck.invariants import _mesh as sharding
from hybridcheck.invariants.migration._placement import Placement, placements
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "MESH_RTOL",
    "Placement",
    "assert_sharding_matches_before",
    "placements",
]

MESH_RTOL = 1e-10
"""float64 relative deviation of the mesh step from the unsharded step: partitioned
contractions reduce in another order (~1e-15); five orders of headroom."""


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
      placements: one per after leaf (``hybridcheck.describe.specs.placements``).
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


def _replicated(params: Any) -> Specs:
    return [(path, jax.sharding.PartitionSpec()) for path, _ in leaves(params)]


def check_sharding_matches_before(ms: MigrationSubject, e: Example) -> None:
    reason = compat.sharding_support()
    if reason:
        raise InvariantNotApplicable(reason)
    if not mesh_axes(ms.before_specs, ms.after_specs):
        raise InvariantNotApplicable(
            f"neither side declares any partitioning ({ms.specs_source}): "
            "from_linen / from_nnx cases read nn.with_partitioning / "
            "nnx.with_partitioning from the model; for other cases set "
            "MigrationCase.before_specs / after_specs"
        )
    with compat.enable_x64():
        p64, b64, lr = to64(e.params), to64(e.batch), jnp.float64(e.lr)
        a64 = ms.convert64(e.params)
        before_specs = ms.before_specs or _replicated(p64)
        after_specs = ms.after_specs or _replicated(a64)
        # The placement depends on the converter's layout, not on the values: one
        # trace per params shape.
        key = str(jax.tree.map(np.shape, p64))
        if key not in ms.placement_memo:
            ms.placement_memo[key] = placements(
                ms.convert, p64, before_specs, after_specs
            )
        try:
            assert_sharding_matches_before(ms.placement_memo[key])
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n  Specs: {ms.specs_source}.") from None
        axes = mesh_axes(after_specs)
        if not axes:  # nothing is partitioned after (and nothing was misplaced)
            return
        mesh = sharding.device_mesh(axes)
        single = ms.after.step64(a64, b64, lr)
        on_mesh = sharding.run_partitioned(
            ms.after.step64, a64, [s for _, s in after_specs], mesh, b64, lr
        )
    assert_sharding_matches_before([], single, on_mesh)


# This family's rows of the registry (report order).
register(
    Invariant(
        "sharding_matches_before",
        "(migration) a converted param that loses or changes its source's "
        "partitioning (`nn.with_partitioning` / logical names through `axis_rules` "
        "vs NNX sharding metadata, traced element by element through `convert`), or "
        "a step on a mesh of forced host devices ≠ the unsharded step (float64)",
        check_sharding_matches_before,
        needs_devices=True,
        kind="migration",
        cost=("convert", "mesh", "float64"),
    ),
)
