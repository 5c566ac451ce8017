"""Where each leaf of a real model's variables lives in halves of plain arrays.

A :class:`Layout` is computed once from a template model (``_plan.plan``). It maps
every leaf of the model's variables (an ``nnx.State`` or a Linen variables dict,
flattened by JAX) to a half label and a place in that half's nested ``dict``, so that

* ``layout.halves(tree)`` turns a model's variables into ``{label: {...}}`` with
  plain numeric arrays only (typed PRNG keys as their ``uint32`` key data), and
* ``layout.rebuild(halves)`` turns them back into a *new* tree of the template's
  structure (new ``nnx.Variable`` objects: nothing is shared with the template or
  with another trace).

Trainable halves come first; RNG state goes to the ``"rng"`` half and every other
non-trainable leaf to the ``"state"`` half. The optimizer's state travels in a third
non-trainable half, ``"opt"`` (``opt_half``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

STATE = "state"
RNG = "rng"
OPT = "opt"
NON_TRAINABLE = (STATE, RNG, OPT)
"""The non-trainable halves, in the order they follow the trainable ones."""


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one leaf of the template lives in the halves."""

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


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each leaf of a model's variables lives in the halves; see module doc."""

    case: str
    treedef: Any
    slots: tuple[Slot, ...]
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


def _copy_dicts(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _copy_dicts(v) for k, v in tree.items()}
    return tree
