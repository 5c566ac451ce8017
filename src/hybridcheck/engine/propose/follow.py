"""What follows the parameter mapping: the optimizer state and the counters.

An optimizer moment (``opt/opt_state/0/mu/<param path>``) mirrors a param: its path
ends with the param's. It goes where its param went, laid out the same way, in the
after optimizer's slot of the same name (else the slot in the same position). A
counter (an integer leaf: ``count``, ``step``) goes to the counter of the same name
(else the only one left), cast to the after dtype (``int32`` vs ``uint32``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hybridcheck.engine.propose.assign import Pair
from hybridcheck.engine.propose.leaves import Leaf, Unit, leaf_name

__all__ = ["follow"]


def _mirrors(leaves: list[Leaf]) -> dict[tuple[tuple[str, ...], int], Leaf]:
    """``(slot, param index) -> optimizer leaf`` for each leaf that mirrors a param."""
    params = [x for x in leaves if x.kind == "param"]
    out = {}
    for leaf in leaves:
        if leaf.kind != "opt":
            continue
        best = None
        for p in params:
            n = len(p.tokens)
            if p.shape == leaf.shape and n and leaf.tokens[-n:] == p.tokens:
                if best is None or n > len(best.tokens):
                    best = p
        if best is not None:
            slot = leaf.tokens[: len(leaf.tokens) - len(best.tokens)]
            out[(slot, best.index)] = leaf
    return out


def _slot_map(before: list[Any], after: list[Any]) -> dict[Any, Any]:
    """Same-named slots; the others in the order they appear, if as many."""
    same = {s: s for s in before if s in after}
    rest_b = [s for s in before if s not in same]
    rest_a = [s for s in after if s not in same.values()]
    if len(rest_b) == len(rest_a):
        same.update(zip(rest_b, rest_a, strict=True))
    return same


def _unique(xs: list[Any]) -> list[Any]:
    return list(dict.fromkeys(xs))


def _counters(before: list[Leaf], after: list[Leaf]) -> list[Pair]:
    bs = [x for x in before if x.kind == "counter"]
    as_ = [x for x in after if x.kind == "counter"]
    pairs = []
    for key in (
        lambda x: (x.half, x.tokens, x.shape),
        lambda x: (x.tokens, x.shape),
        lambda x: (leaf_name(x), x.shape),
        lambda x: x.shape,
    ):
        by_a: dict[Any, list[Leaf]] = defaultdict(list)
        for a in as_:
            by_a[key(a)].append(a)
        by_b: dict[Any, list[Leaf]] = defaultdict(list)
        for b in bs:
            by_b[key(b)].append(b)
        for k, found in by_b.items():
            if len(found) == 1 and len(by_a.get(k, [])) == 1:
                how = "shape" if key(found[0]) == found[0].shape else "name"
                pairs.append(Pair(Unit(found[0]), Unit(by_a[k][0]), how))
        done = {id(p.before.leaf) for p in pairs} | {id(p.after.leaf) for p in pairs}
        bs = [b for b in bs if id(b) not in done]
        as_ = [a for a in as_ if id(a) not in done]
    return pairs


def follow(before: list[Leaf], after: list[Leaf], pairs: list[Pair]) -> list[Pair]:
    """The pairs of optimizer moments and counters that follow ``pairs``."""
    mb, ma = _mirrors(before), _mirrors(after)
    slots = _slot_map(_unique([s for s, _ in mb]), _unique([s for s, _ in ma]))
    out = []
    for pair in pairs:
        if pair.before.leaf.kind != "param":
            continue
        for (slot, index), leaf in mb.items():
            if index != pair.before.leaf.index or slot not in slots:
                continue
            target = ma.get((slots[slot], pair.after.leaf.index))
            if target is None:
                continue
            out.append(
                Pair(
                    Unit(leaf, pair.before.layer),
                    Unit(target, pair.after.layer),
                    f"follows {pair.before.leaf.where}",
                    perm=pair.perm,
                )
            )
    return out + _counters(before, after)
