"""Matching the before model's params and statistics to the after model's, most
reliable evidence first.

1. **units**: a leaf stacked along a leading layer axis (``nn.scan``,
   ``nnx.vmap``) whose other side keeps one leaf per layer is split into layers;
2. **name**: the same kind, size, normalised module path and leaf name (a path may
   carry an extra prefix on one side), and the same layer numbers;
3. **shape**: the only unit of its kind and size left on both sides;
4. **order**: several of one kind and size: paired in the order each forward pass
   first consumes them (:mod:`.order`).

What is left is unmatched, with the reason. The oracle (:mod:`.search`) then
settles what these could not: the axis layout of each pair, and the pairing within
a group of several.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from hybridcheck.engine.propose.leaves import Leaf, Unit, leaf_name
from hybridcheck.engine.propose.transforms import Perm, candidate_perms

__all__ = ["Pair", "Match", "units_of", "match_units", "MATCHED_KINDS"]

MATCHED_KINDS = ("param", "stat")
"""Kinds matched on their own evidence; the optimizer state and counters follow
(:mod:`.follow`)."""


@dataclasses.dataclass
class Pair:
    """A before unit read as an after unit through ``perm`` (see
    :mod:`.transforms`); ``how`` says what decided it."""

    before: Unit
    after: Unit
    how: str
    perm: Perm = ()
    group: int = -1

    def __post_init__(self) -> None:
        if not self.perm:
            self.perm = candidate_perms(self.before.shape, self.after.shape)[0]


@dataclasses.dataclass
class Match:
    """The pairs, the groups the oracle may re-pair, and what is unmatched."""

    pairs: list[Pair]
    groups: list[list[int]]
    unmatched: list[tuple[str, Unit, str]]


def _per_layer(leaf: Leaf, other: list[Leaf]) -> bool:
    """The other side keeps ``leaf``'s layers as leaves of its own: as many leaves
    of its kind, name and layer shape as it has layers (NNX ``layers/0/...``)."""
    like = [
        x
        for x in other
        if x.kind == leaf.kind
        and x.shape == leaf.shape[1:]
        and (x.words == leaf.words or _suffix(x.words, leaf.words))
    ]
    return len(like) == leaf.shape[0]


def _split_layers(leaves: list[Leaf], other: list[Leaf]) -> set[int]:
    """Indices of ``leaves`` stacked along a leading layer axis that the other side
    keeps as one leaf per layer: named alike, else more small leaves there and
    fewer big ones."""
    split: set[int] = set()
    for kind in MATCHED_KINDS:
        mine = Counter(x.size for x in leaves if x.kind == kind)
        theirs = Counter(x.size for x in other if x.kind == kind)
        for leaf in sorted(leaves, key=lambda x: x.index):
            if leaf.kind != kind or len(leaf.shape) < 2 or leaf.shape[0] < 2:
                continue
            small = leaf.size // leaf.shape[0]
            if _per_layer(leaf, other) or (
                mine[leaf.size] > theirs[leaf.size]
                and theirs[small] - mine[small] >= leaf.shape[0]
            ):
                split.add(leaf.index)
                mine[leaf.size] -= 1
                mine[small] += leaf.shape[0]
    return split


def units_of(before: list[Leaf], after: list[Leaf]) -> tuple[list[Unit], list[Unit]]:
    """Both sides' units of the matched kinds."""
    out = []
    for mine, other in ((before, after), (after, before)):
        split = _split_layers(mine, other)
        units = []
        for leaf in mine:
            if leaf.kind not in MATCHED_KINDS:
                continue
            if leaf.index in split:
                units += [Unit(leaf, i) for i in range(leaf.shape[0])]
            else:
                units.append(Unit(leaf))
        out.append(units)
    return out[0], out[1]


def _name_key(u: Unit) -> tuple[Any, ...]:
    return (u.leaf.kind, u.size, leaf_name(u.leaf), u.numbers)


def _suffix(a: Sequence[str], b: Sequence[str]) -> bool:
    shorter, longer = (a, b) if len(a) <= len(b) else (b, a)
    return len(shorter) >= 2 and tuple(longer[len(longer) - len(shorter) :]) == tuple(
        shorter
    )


def _by_name(before: list[Unit], after: list[Unit]) -> list[Pair]:
    """Mutually unique name matches: exact paths first, then a path that is the
    other's suffix (one side nests the model one module deeper)."""
    pairs: list[Pair] = []
    for same in (lambda a, b: a == b, _suffix):
        taken = {id(p.after) for p in pairs} | {id(p.before) for p in pairs}
        cands: dict[int, list[Unit]] = defaultdict(list)
        back: dict[int, list[Unit]] = defaultdict(list)
        free_b = [u for u in before if id(u) not in taken]
        free_a = [u for u in after if id(u) not in taken]
        for b in free_b:
            for a in free_a:
                if _name_key(a) == _name_key(b) and same(a.leaf.words, b.leaf.words):
                    cands[id(b)].append(a)
                    back[id(a)].append(b)
        for b in free_b:
            found = cands.get(id(b), [])
            if len(found) == 1 and len(back[id(found[0])]) == 1:
                pairs.append(Pair(b, found[0], "name"))
    return pairs


def _rank(u: Unit, order: dict[int, Any]) -> tuple[Any, ...]:
    pos = order.get(u.leaf.index)
    return (pos is None, pos or (), u.layer or 0, u.leaf.index)


def match_units(
    before: list[Unit],
    after: list[Unit],
    order_before: dict[int, Any],
    order_after: dict[int, Any],
) -> Match:
    """Pairs the units by name, then by shape, then by consumption order.

    Args:
      before, after: each side's units (:func:`units_of`).
      order_before, order_after: leaf index -> where the loss first consumes it
        (``None``: never).
    """
    pairs = _by_name(before, after)
    groups: list[list[int]] = []
    taken = {id(p.before) for p in pairs} | {id(p.after) for p in pairs}
    left_b = [u for u in before if id(u) not in taken]
    left_a = [u for u in after if id(u) not in taken]
    unmatched: list[tuple[str, Unit, str]] = []
    for keyed in (
        lambda u: (u.leaf.kind, u.size, leaf_name(u.leaf)),
        lambda u: (u.leaf.kind, u.size),
    ):
        by_b: dict[Any, list[Unit]] = defaultdict(list)
        by_a: dict[Any, list[Unit]] = defaultdict(list)
        for u in left_b:
            by_b[keyed(u)].append(u)
        for u in left_a:
            by_a[keyed(u)].append(u)
        for key, bs in by_b.items():
            as_ = by_a.get(key, [])
            if len(bs) != len(as_):
                continue
            bs = sorted(bs, key=lambda u: _rank(u, order_before))
            as_ = sorted(as_, key=lambda u: _rank(u, order_after))
            how = "shape" if len(bs) == 1 else "order"
            group = list(range(len(pairs), len(pairs) + len(bs)))
            g = len(groups) if len(bs) > 1 else -1
            pairs += [Pair(b, a, how, group=g) for b, a in zip(bs, as_, strict=True)]
            if len(bs) > 1:
                groups.append(group)
        taken = {id(p.before) for p in pairs} | {id(p.after) for p in pairs}
        left_b = [u for u in left_b if id(u) not in taken]
        left_a = [u for u in left_a if id(u) not in taken]
    counts_a = Counter((u.leaf.kind, u.size) for u in left_a)
    counts_b = Counter((u.leaf.kind, u.size) for u in left_b)
    for side, left, other in (
        ("before", left_b, counts_a),
        ("after", left_a, counts_b),
    ):
        for u in left:
            n = other[(u.leaf.kind, u.size)]
            reason = (
                f"no {u.leaf.kind} of {u.size} elements on the other side"
                if not n
                else f"{n} candidates of its kind and size on the other side, and a "
                "different number on this one: the pairing is not decidable"
            )
            unmatched.append((side, u, reason))
    return Match(pairs, groups, unmatched)
