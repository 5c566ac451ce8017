"""How a real model's variables are labelled into halves of plain arrays, and back.

A :class:`Layout` is computed once from a template model. It maps every leaf of the
model's variables (an ``nnx.State`` or a Linen variables dict, flattened by JAX) to
a half label and a place in that half's nested ``dict``, so that

* ``layout.halves(tree)`` turns a model's variables into ``{label: {...}}`` with
  plain numeric arrays only (typed PRNG keys as their ``uint32`` key data), and
* ``layout.rebuild(halves)`` turns them back into a *new* tree of the template's
  structure (new ``nnx.Variable`` objects: nothing is shared with the template or
  with another trace).

Labelling rule (see :func:`plan`): trainable leaves take the label of the first
user pattern that matches their ``/``-joined path, else their automatic label (the
bridge wrapper they sit under); RNG state (``nnx.RngKey``/``nnx.RngCount``) goes to
the ``"rng"`` half and every other leaf to the ``"state"`` half. The optimizer's
state travels in a third non-trainable half, ``"opt"``, as a :class:`PlainTree`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

STATE = "state"
RNG = "rng"
OPT = "opt"
NON_TRAINABLE = (STATE, RNG, OPT)
"""The non-trainable halves, in the order they follow the trainable ones."""
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


@dataclasses.dataclass(frozen=True)
class _Slot:
    half: str | None  # None: a non-numeric leaf, passed through unchanged
    key: tuple[str, ...]
    key_impl: Any = None  # the PRNG implementation of a typed key leaf
    static: Any = None


def path_entry(key: Any) -> Any:
    """A JAX key-path entry (``DictKey``, ``GetAttrKey``, ...) as a str or int."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def path_str(path: Sequence[Any]) -> str:
    return "/".join(str(p) for p in path)


def _is_typed_key(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each leaf of a model's variables lives in the halves; see module doc."""

    case: str
    treedef: Any
    slots: tuple[_Slot, ...]
    labels: tuple[str, ...]  # trainable halves first, then "state" if any
    paths: tuple[str, ...]  # '/'-joined path of each leaf, for messages
    leaf_paths: Callable[[Any], set[str]]  # the same paths for another tree

    @property
    def trainable(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if label not in NON_TRAINABLE)

    @property
    def non_trainable(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if label in NON_TRAINABLE)

    def reseed(self, halves: Mapping[str, Any], key: Any) -> dict[str, Any]:
        """``halves`` with every PRNG key leaf of the ``"rng"`` half replaced.

        Key ``j`` (in leaf order) becomes key data of its own PRNG implementation
        derived from ``fold_in(key, j)``: the same ``key`` gives the same halves;
        counts and every other half are returned as they are.
        """
        if jax.dtypes.issubdtype(jax.numpy.asarray(key).dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        if RNG not in halves:
            return dict(halves)
        rng = _copy_dicts(halves[RNG])
        index = 0
        for slot in self.slots:
            if slot.half != RNG or slot.key_impl is None:
                continue
            bits = jax.random.bits(jax.random.fold_in(key, index), (), jax.numpy.uint32)
            base = jax.random.key(0, impl=slot.key_impl)
            node = rng
            for part in slot.key[:-1]:
                node = node[part]
            node[slot.key[-1]] = jax.random.key_data(jax.random.fold_in(base, bits))
            index += 1
        return {**halves, RNG: rng}

    def halves(self, tree: Any, *, after: str) -> dict[str, Any]:
        """``{label: nested dict of plain arrays}`` from a tree of this layout."""
        leaves, treedef = jax.tree.flatten(tree)
        if treedef != self.treedef:
            raise ValueError(self._structure_message(tree, after))
        out: dict[str, Any] = {label: {} for label in self.labels}
        for slot, value in zip(self.slots, leaves, strict=True):
            if slot.half is None:
                continue
            if slot.key_impl is not None:
                value = jax.random.key_data(value)
            node = out[slot.half]
            for part in slot.key[:-1]:
                node = node.setdefault(part, {})
            node[slot.key[-1]] = jax.numpy.asarray(value)
        return out

    def rebuild(self, halves: Mapping[str, Any]) -> Any:
        """A new tree of the template's structure from ``halves``."""
        if not isinstance(halves, Mapping) or set(halves) != set(self.labels):
            got = sorted(halves) if isinstance(halves, Mapping) else type(halves)
            raise ValueError(
                f"[{self.case}] params must be a dict with the halves "
                f"{list(self.labels)} (what init returns), got {got}"
            )
        leaves = []
        for slot, path in zip(self.slots, self.paths, strict=True):
            if slot.half is None:
                leaves.append(slot.static)
                continue
            value = halves[slot.half]
            try:
                for part in slot.key:
                    value = value[part]
            except (KeyError, TypeError, IndexError):
                raise ValueError(
                    f"[{self.case}] params[{slot.half!r}] lacks the leaf "
                    f"{path_str(slot.key)!r} (model variable {path!r})"
                ) from None
            value = jax.numpy.asarray(value)  # a NumPy input is never written into
            if slot.key_impl is not None:
                value = jax.random.wrap_key_data(value, impl=slot.key_impl)
            leaves.append(value)
        return jax.tree.unflatten(self.treedef, leaves)

    def _structure_message(self, tree: Any, after: str) -> str:
        new, old = self.leaf_paths(tree), set(self.paths)
        added, dropped = sorted(new - old)[:5], sorted(old - new)[:5]
        return (
            f"[{self.case}] after {after} the model's variables have another "
            f"structure than the template's (added {added}, dropped {dropped}; or a "
            "variable's type or metadata changed). hybridcheck needs a step that "
            "keeps the set of variables fixed: create every variable in model_fn "
            "or module.init."
        )


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
    found: str,
    leaf_paths: Callable[[Any], set[str]] | None = None,
) -> Layout:
    """The :class:`Layout` for ``entries`` (in ``treedef``'s leaf order).

    Args:
      case: the case name, for messages.
      treedef: the JAX treedef the entries' values were flattened from.
      entries: one :class:`Entry` per leaf.
      overrides: ``{label: pattern or patterns}`` over '/'-joined leaf paths
        (``fnmatch``; ``"encoder"`` also matches everything under ``encoder/``).
      found: a phrase describing the model, for the "fewer than two halves" error.
      leaf_paths: the '/'-joined paths of another tree's leaves, as ``entries``
        name them (default: JAX key paths), for the "structure changed" error.

    Raises:
      ValueError: a non-floating parameter, a pattern that matches no parameter,
        the label "state" in overrides, or fewer than two trainable halves.
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
            slots.append(_Slot(None, (), static=value))
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
        slots.append(_Slot(half, tuple(str(k) for k in key) or ("value",), impl))
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
    # A one-half model (a migration case) is allowed later: drop this check then.
    if len(ordered) < 2:
        raise ValueError(
            f"[{case}] found {len(ordered)} trainable half {list(ordered)} in {found}; "
            "a hybrid case needs two: put a Linen module in bridge.ToNNX (or an NNX "
            "module in bridge.to_linen), or split by path with "
            "halves={'encoder': 'encoder/*', ...}"
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


def _check_unique(case: str, slots: Sequence[_Slot], paths: Sequence[str]) -> None:
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


def _copy_dicts(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _copy_dicts(v) for k, v in tree.items()}
    return tree


@dataclasses.dataclass(frozen=True)
class PlainTree:
    """Any pytree (an optimizer's state) as a nested ``dict`` of plain arrays, and
    back into a new tree of the template's structure.

    ``keep`` marks leaves taken from the tree given to :meth:`rebuild` instead of
    from the plain dict (an optimizer state's hyperparameters that depend on the
    learning rate, e.g. ``optax.inject_hyperparams``: they come from this step's
    ``tx(lr)``, not from the state carried over).
    """

    treedef: Any
    keys: tuple[tuple[str, ...], ...]
    keep: tuple[bool, ...]

    @classmethod
    def of(cls, tree: Any, other: Any = None) -> PlainTree:
        """The layout of ``tree``; leaves that differ in ``other`` (the same state
        built with another learning rate) are marked ``keep``."""
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
        keys = tuple(
            tuple(str(path_entry(k)) for k in keypath) or ("value",)
            for keypath, _ in flat
        )
        if other is None:
            keep = (False,) * len(flat)
        else:
            pairs = zip(jax.tree.leaves(tree), jax.tree.leaves(other), strict=True)
            keep = tuple(
                np.shape(a) != np.shape(b) or not np.array_equal(a, b) for a, b in pairs
            )
        return cls(treedef, keys, keep)

    def plain(self, tree: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in zip(self.keys, jax.tree.leaves(tree), strict=True):
            node = out
            for part in key[:-1]:
                node = node.setdefault(part, {})
            node[key[-1]] = jax.numpy.asarray(value)
        return out

    def rebuild(self, plain: Mapping[str, Any], fresh: Any) -> Any:
        """A new tree from ``plain``, ``keep`` leaves from ``fresh``."""
        leaves = []
        for key, keep, new in zip(
            self.keys, self.keep, jax.tree.leaves(fresh), strict=True
        ):
            if keep:
                leaves.append(new)
                continue
            value: Any = plain
            for part in key:
                value = value[part]
            leaves.append(jax.numpy.asarray(value))
        return jax.tree.unflatten(self.treedef, leaves)
