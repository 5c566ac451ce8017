"""Which half each leaf of a template model goes to: the labelling rule behind a Layout.

Trainable leaves take the label of the first user pattern that matches their
``/``-joined path, else their automatic label (the bridge wrapper they sit under);
RNG state (``nnx.RngKey``/``nnx.RngCount``) goes to the ``"rng"`` half and every
other leaf to the ``"state"`` half. ``graph`` classifies the leaves
(:class:`Entry`), :func:`plan` checks and places them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from hybridcheck.flaxmodels.halves import (
    NON_TRAINABLE,
    STATE,
    Layout,
    Slot,
    path_entry,
    path_str,
)

_NUMBERS = (jax.Array, np.ndarray, np.generic, bool, int, float, complex)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One leaf of a template model, as the caller classified it."""

    path: tuple[Any, ...]  # path entries (str or int) from the tree's root
    value: Any  # the leaf
    trainable: bool  # a Param (or subclass) / a Linen trainable collection
    auto_half: str  # label when no user pattern matches (trainable leaves)
    auto_key: tuple[Any, ...]  # place inside that half
    state_half: str = STATE  # the half of a non-trainable leaf (STATE or RNG)


def _is_typed_key(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _label_of(
    entry: Entry, overrides: Mapping[str, tuple[str, ...]], used: set[str]
) -> tuple[str, tuple[Any, ...]]:
    text = path_str(entry.path)
    for label, patterns in overrides.items():
        for pattern in patterns:
            if fnmatch.fnmatchcase(text, pattern) or fnmatch.fnmatchcase(
                text, pattern.rstrip("/") + "/*"
            ):
                used.add(pattern)
                return label, entry.path
    return entry.auto_half, entry.auto_key


def plan(
    case: str,
    treedef: Any,
    entries: Sequence[Entry],
    overrides: Mapping[str, str | Sequence[str]] | None,
    *,
    leaf_paths: Callable[[Any], set[str]] | None = None,
) -> Layout:
    """The :class:`Layout` for ``entries`` (in ``treedef``'s leaf order).

    Args:
      case: the case name, for messages.
      treedef: the JAX treedef the entries' values were flattened from.
      entries: one :class:`Entry` per leaf.
      overrides: ``{label: pattern or patterns}`` over '/'-joined leaf paths
        (``fnmatch``; ``"encoder"`` also matches everything under ``encoder/``).
      leaf_paths: the '/'-joined paths of another tree's leaves, as ``entries``
        name them (default: JAX key paths), for the "structure changed" error.

    Raises:
      ValueError: a non-floating parameter, a pattern that matches no parameter,
        or the label "state" in overrides. One trainable half is a valid plan (a
        side of a migration); ``HybridCase.subject`` asks for two when verified alone.
    """
    patterns = {
        label: (pats,) if isinstance(pats, str) else tuple(pats)
        for label, pats in (overrides or {}).items()
    }
    reserved = sorted(set(patterns) & set(NON_TRAINABLE))
    if reserved:
        raise ValueError(
            f"[{case}] halves may not use the labels {reserved} (reserved for "
            f"{list(NON_TRAINABLE)}, the non-trainable halves)"
        )
    used: set[str] = set()
    slots, labels, paths = [], [], []
    for entry in entries:
        text = path_str(entry.path)
        paths.append(text)
        value: Any = entry.value
        impl = jax.random.key_impl(value) if _is_typed_key(value) else None
        if not isinstance(value, _NUMBERS):
            slots.append(Slot(None, (), static=value))
            continue
        if entry.trainable:
            dtype = np.asarray(value).dtype if impl is None else None
            if dtype is None or not np.issubdtype(dtype, np.floating):
                raise ValueError(
                    f"[{case}] parameter {text!r} has dtype {dtype or 'PRNG key'}; "
                    "parameters must be floating (they are differentiated): hold "
                    "integer state in an nnx.Variable or a Linen collection other "
                    "than 'params'"
                )
            half, key = _label_of(entry, patterns, used)
        else:
            half, key = entry.state_half, entry.path
        if half not in labels:
            labels.append(half)
        slots.append(Slot(half, tuple(str(k) for k in key) or ("value",), impl))
    unused = [p for pats in patterns.values() for p in pats if p not in used]
    if unused:
        trainable = [p for p, e in zip(paths, entries, strict=True) if e.trainable]
        raise ValueError(
            f"[{case}] halves patterns {unused} match no parameter; parameter paths "
            f"are e.g. {trainable[:6]}"
        )
    _check_unique(case, slots, paths)
    ordered = tuple(
        sorted((x for x in labels if x not in NON_TRAINABLE), key=labels.index)
    )
    return Layout(
        case=case,
        treedef=treedef,
        slots=tuple(slots),
        labels=ordered + tuple(x for x in NON_TRAINABLE if x in labels),
        paths=tuple(paths),
        leaf_paths=leaf_paths or _key_paths,
    )


def _key_paths(tree: Any) -> set[str]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_str([path_entry(k) for k in keypath]) for keypath, _ in flat}


def _check_unique(case: str, slots: Sequence[Slot], paths: Sequence[str]) -> None:
    leaves: dict[tuple[Any, ...], str] = {}
    inner: dict[tuple[Any, ...], str] = {}
    for slot, path in zip(slots, paths, strict=True):
        if slot.half is None:
            continue
        where = (slot.half, *slot.key)
        prefixes = [where[:i] for i in range(1, len(where))]
        clash = leaves.get(where) or inner.get(where)
        clash = clash or next((leaves[p] for p in prefixes if p in leaves), None)
        if clash is not None:
            raise ValueError(
                f"[{case}] variables {clash!r} and {path!r} map to the same place "
                f"{path_str(where)!r}; give them distinct names or halves"
            )
        leaves[where] = path
        inner.update((p, path) for p in prefixes)
