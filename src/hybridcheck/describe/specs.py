"""A case's partitioning: the specs a migration side declares or reads from its
model, resolved to one ``PartitionSpec`` per leaf (logical names through
``axis_rules``), and the mesh axes they use. Where each converted element must live
is :mod:`hybridcheck.invariants.migration.sharding`'s concern.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import PartitionSpec

__all__ = ["AXIS_SIZE", "Specs", "entry_axes", "mesh_axes", "resolve_specs"]

AXIS_SIZE = 2

Specs = list[tuple[str, PartitionSpec]]


def entry_axes(entry: Any) -> tuple[str, ...]:
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
        if not all(isinstance(a, str) for a in entry_axes(entry)):
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
        axes = [a for entry in spec for a in entry_axes(entry)]
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
                seen.update(dict.fromkeys(entry_axes(entry)))
    return list(seen)
