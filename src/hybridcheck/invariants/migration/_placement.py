"""Where each converted element must live: every after element is traced to the
before element it copies (a ``jax.jvp`` of ``convert`` with every before element
tagged by its index) and must sit on the same shard of every mesh axis as its
source, on a mesh with ``AXIS_SIZE`` devices per axis (the smallest mesh that tells
every placement apart). A converter may re-lay out arrays (transpose, reshape, split
heads), so specs are never compared axis by axis.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from hybridcheck.describe.specs import AXIS_SIZE, Specs, entry_axes, mesh_axes
from hybridcheck.describe.subject import to64
from hybridcheck.describe.trees import InvariantNotApplicable, leaves

__all__ = ["Placement", "placements"]


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
