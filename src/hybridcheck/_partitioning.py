"""Where a converted parameter's elements live, before and after a migration.

A partitioning says, for each element of a parameter, on which shard of each mesh
axis it lives. A converter may re-lay out arrays (transpose, reshape, split heads),
so specs cannot be compared axis by axis. Instead each after element is traced to
the before element it is a copy of (a ``jax.jvp`` of ``convert`` with every before
element tagged by its index), and the after element must live where its source
lived. The shards are those of a mesh with ``AXIS_SIZE`` devices on every mesh
axis, the smallest mesh that tells every placement apart.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import PartitionSpec

from hybridcheck.invariants import InvariantNotApplicable
from hybridcheck.invariants._tree import leaves
from hybridcheck.invariants.partitioning import Placement
from hybridcheck.subject import to64

__all__ = ["AXIS_SIZE", "mesh_axes", "placements", "resolve_specs"]

AXIS_SIZE = 2
SEARCH_LIMIT = 1 << 20
"""Leaves larger than this are not searched for the spec that would fix them."""

Specs = list[tuple[str, PartitionSpec]]


def _entry_axes(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _as_spec(leaf: Any, rules: Any, where: str, path: str) -> PartitionSpec:
    if leaf is None:
        return PartitionSpec()
    if not isinstance(leaf, PartitionSpec | tuple | list):
        raise TypeError(
            f"{where}: the spec of {path} must be a PartitionSpec, a tuple of axis "
            f"names or None, got {type(leaf).__name__}"
        )
    names: tuple[Any, ...] = tuple(cast(Sequence[Any], leaf))
    for entry in names:
        if not all(isinstance(a, str) for a in _entry_axes(entry)):
            raise TypeError(
                f"{where}: the spec of {path} has entry {entry!r}; each entry is a "
                "mesh or logical axis name, a tuple of names, or None"
            )
    mapped = None if rules is None else nn.logical_to_mesh_axes(names, rules)
    if mapped is not None:
        names = tuple(mapped)
    return PartitionSpec(*names)


def resolve_specs(specs: Any, params: Any, rules: Any, where: str) -> Specs | None:
    """``[(leaf path, mesh-axis PartitionSpec)]`` in the order of ``params``' leaves.

    Args:
      specs: ``None`` (no declaration), a pytree with the structure of ``params``
        whose leaves are specs, or ``specs(params) -> that pytree``.
      params: the side's params.
      rules: logical axis rules (``((logical, mesh axis), ...)``) or ``None``.
      where: names the field in errors (``"MigrationCase('x').before_specs"``).

    Raises:
      ValueError: the tree does not have the structure of ``params``, or a spec has
        more entries than its leaf has dimensions or names a mesh axis twice.
      TypeError: a leaf is not a spec.
    """
    if specs is None:
        return None
    if callable(specs):
        specs = specs(params)
    out: Specs = []

    def add(keys: Any, leaf: Any, spec_leaf: Any) -> None:
        path = jax.tree_util.keystr(keys) or "<root>"
        spec = _as_spec(spec_leaf, rules, where, path)
        axes = [a for entry in spec for a in _entry_axes(entry)]
        if len(spec) > np.ndim(leaf) or len(set(axes)) != len(axes):
            raise ValueError(
                f"{where}: the spec {spec} of {path} (shape {np.shape(leaf)}) has more "
                "entries than dimensions or uses a mesh axis twice"
            )
        out.append((path, spec))

    try:  # specs at the params' leaf positions (a None there is a spec)
        jax.tree_util.tree_map_with_path(add, params, specs)
    except (ValueError, KeyError) as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(
            f"{where} must have the structure of the params "
            f"({jax.tree.structure(params)}) with one spec per leaf: {exc}"
        ) from exc
    return out


def mesh_axes(*specs: Specs | None) -> list[str]:
    """The mesh axes the specs use, in first-use order."""
    seen: dict[str, None] = {}
    for side in specs:
        for _, spec in side or ():
            for entry in spec:
                seen.update(dict.fromkeys(_entry_axes(entry)))
    return list(seen)


def homes(spec: PartitionSpec, shape: Sequence[int]) -> dict[str, np.ndarray]:
    """For each mesh axis ``spec`` uses, the shard of every element (flat, C order)."""
    index = np.indices(tuple(shape)).reshape(len(shape), -1)
    out = {}
    for dim, entry in enumerate(spec):
        axes = _entry_axes(entry)
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
