"""The converted params keep their source's partitioning, and the after step on a
mesh equals the unsharded step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from hybridcheck import compat
from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.migration_case import MigrationSubject
from hybridcheck.describe.specs import AXIS_SIZE, Specs, entry_axes, mesh_axes
from hybridcheck.describe.subject import Example, to64
from hybridcheck.describe.trees import (
    InvariantNotApplicable,
    fail,
    leaves,
)
from hybridcheck.invariants import _mesh as sharding
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


SEARCH_LIMIT = 1 << 20
"""Leaves larger than this are not searched for the spec that would fix them."""


def homes(spec: PartitionSpec, shape: Sequence[int]) -> dict[str, np.ndarray]:
    """For each mesh axis ``spec`` uses, the shard of every element (flat, C order)."""
    index = np.indices(tuple(shape)).reshape(len(shape), -1)
    out = {}
    for dim, entry in enumerate(spec):
        axes = entry_axes(entry)
        if not axes:
            continue
        chunk = -(-int(shape[dim]) // AXIS_SIZE ** len(axes))
        shard = index[dim] // max(chunk, 1)
        for k, axis in enumerate(axes):  # major first, as JAX lays out the product
            out[axis] = (shard // AXIS_SIZE ** (len(axes) - 1 - k)) % AXIS_SIZE
    return out


def _fitting_spec(
    shape: Sequence[int], want: dict[str, np.ndarray]
) -> PartitionSpec | None:
    """A spec for ``shape`` whose homes are ``want`` (None if there is none)."""
    used = [a for a, c in want.items() if np.all(c >= 0)]
    if len(used) != sum(np.any(c >= 0) for c in want.values()):
        return None  # an axis that shards some elements and replicates others
    size = int(np.prod(shape, dtype=np.int64))
    if size > SEARCH_LIMIT or len(used) > 3:
        return None
    for order in itertools.permutations(used):
        for dims in itertools.product(range(len(shape)), repeat=len(order)):
            entries: list[Any] = [() for _ in shape]
            for axis, dim in zip(order, dims, strict=True):
                entries[dim] += (axis,)
            spec = PartitionSpec(
                *(None if not e else e[0] if len(e) == 1 else e for e in entries)
            )
            got = homes(spec, shape)
            if set(got) == set(used) and all(
                np.array_equal(got[a], want[a]) for a in used
            ):
                return spec
    return None


def _tags(before: Any) -> tuple[Any, Any, list[tuple[str, int, int]]]:
    """Before params tagged with 1-based element ids, ones, and the id ranges."""
    ranges: list[tuple[str, int, int]] = []
    ids: list[Any] = []
    ones: list[Any] = []
    offset = 0
    for path, leaf in leaves(before):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            size = int(np.size(leaf))
            ids.append(jnp.arange(offset + 1, offset + size + 1, dtype=jnp.float64))
            ids[-1] = ids[-1].reshape(np.shape(leaf))
            ones.append(jnp.ones(np.shape(leaf), jnp.float64))
            ranges.append((path, offset, size))
            offset += size
        else:
            ids.append(np.zeros(np.shape(leaf), jax.dtypes.float0))
            ones.append(ids[-1])
    treedef = jax.tree.structure(before)
    return jax.tree.unflatten(treedef, ids), jax.tree.unflatten(treedef, ones), ranges


def placements(
    convert: Callable[[Any], Any],
    before: Any,
    before_specs: Specs,
    after_specs: Specs,
) -> list[Placement]:
    """Each float after leaf's placement vs its sources' (call under x64).

    Raises:
      InvariantNotApplicable: ``convert`` is not differentiable, or an after
        element is not a plain copy of one before element.
    """
    before = to64(before)
    tagged, ones, ranges = _tags(before)
    try:
        _, linear = jax.linearize(convert, before)
        ids, counts = linear(tagged), linear(ones)
    except Exception as exc:  # noqa: BLE001 - a host-side converter
        raise InvariantNotApplicable(
            f"convert is not differentiable by JAX ({type(exc).__name__}): which "
            "before element each after element copies cannot be traced"
        ) from exc
    total = sum(size for _, _, size in ranges)
    table = {a: np.full(total, -1) for a in mesh_axes(before_specs)}
    spec_of, before_leaves = dict(before_specs), dict(leaves(before))
    for path, offset, size in ranges:
        shape = np.shape(before_leaves[path])
        for axis, coord in homes(spec_of[path], shape).items():
            table[axis][offset : offset + size] = coord
    out = []
    after_spec_of = dict(after_specs)
    for (path, tag_leaf), (_, count_leaf) in zip(
        leaves(ids), leaves(counts), strict=True
    ):
        if np.asarray(tag_leaf).dtype == jax.dtypes.float0:
            continue
        shape = np.shape(tag_leaf)
        tag, count = np.asarray(tag_leaf).ravel(), np.asarray(count_leaf).ravel()
        copied = count == 1
        if np.any((count != 0) & ~copied) or np.any(tag[copied] % 1):
            raise InvariantNotApplicable(
                f"after leaf {path} is not a plain copy of before elements (convert "
                "scales or mixes them), so its partitioning cannot be traced"
            )
        source = np.zeros(tag.size, np.int64)
        source[copied] = tag[copied].astype(np.int64) - 1
        got = homes(after_spec_of[path], shape)
        want = {a: np.full(tag.size, -1) for a in set(table) | set(got)}
        bad = np.zeros(tag.size, bool)
        for axis, coord in want.items():
            if axis in table:
                coord[copied] = table[axis][source[copied]]
            bad |= copied & (got.get(axis, np.full(tag.size, -1)) != coord)
        sources = [
            name
            for name, offset, size in ranges
            if np.any(copied & (source >= offset) & (source < offset + size))
        ]
        fits = np.any(bad) and np.all(copied)
        out.append(
            Placement(
                path,
                after_spec_of[path],
                _fitting_spec(shape, want) if fits else None,
                tuple(f"{name} {spec_of[name]}" for name in sources),
                int(np.count_nonzero(bad)),
                int(np.count_nonzero(copied)),
            )
        )
    return out


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
