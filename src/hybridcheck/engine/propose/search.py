"""Settling what names, shapes and order left open, by the oracle.

The open **decisions** are: the pairing within each group of several units of one
kind and size (paired by consumption order), and each consumed pair's axis layout
(identity or plain reshape first, then transposes: :func:`.transforms.candidate_perms`).
The default of every decision is tried first; then every way of changing one
decision, then two, and so on, in forward order, until the oracle accepts one or
``cap`` converters have been tried. Changed pairs are decided by the oracle.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator

from hybridcheck.engine.propose.assign import Match, Pair
from hybridcheck.engine.propose.transforms import candidate_perms

__all__ = ["Found", "search", "CAP"]

CAP = 256
"""Converters the oracle tries at most."""

GROUP_PERMUTATIONS = 4
"""Groups up to this size try every pairing; larger ones swap neighbours only."""


@dataclasses.dataclass
class Found:
    """The search's outcome: the pairs chosen (the accepted ones, else the
    closest), whether the oracle accepted them, how many it tried, whether the
    cap was hit, and the worst loss deviation in float32-noise units."""

    pairs: list[Pair]
    passed: bool
    tried: int
    cap_hit: bool
    worst: float


def _group_options(n: int) -> list[tuple[int, ...]]:
    ident = tuple(range(n))
    if n <= GROUP_PERMUTATIONS:
        return list(itertools.permutations(ident))
    swaps = []
    for i in range(n - 1):
        p = list(ident)
        p[i], p[i + 1] = p[i + 1], p[i]
        swaps.append(tuple(p))
    return [ident, *swaps]


def _decisions(match: Match, consumed: set[int]) -> list[tuple[str, int, int]]:
    """``(kind, which, options)``: a group's pairing or a pair's layout."""
    out = [
        ("group", g, len(_group_options(len(m)))) for g, m in enumerate(match.groups)
    ]
    for i, pair in enumerate(match.pairs):
        if pair.before.leaf.kind != "param" or pair.before.leaf.index not in consumed:
            continue
        n = len(candidate_perms(pair.before.shape, pair.after.shape))
        if n > 1:
            out.append(("layout", i, n))
    return [d for d in out if d[2] > 1]


def _choices(decisions: list[tuple[str, int, int]]) -> Iterator[dict[int, int]]:
    """Choices (decision index -> option), fewest changed decisions first."""
    for k in range(len(decisions) + 1):
        for which in itertools.combinations(range(len(decisions)), k):
            ranges = [range(1, decisions[d][2]) for d in which]
            for options in itertools.product(*ranges):
                yield dict(zip(which, options, strict=True))


def _apply(
    match: Match, decisions: list[tuple[str, int, int]], choice: dict[int, int]
) -> list[Pair]:
    pairs = [dataclasses.replace(p) for p in match.pairs]
    for d, option in choice.items():
        kind, which, _ = decisions[d]
        if kind != "group":
            continue
        members = match.groups[which]
        order = _group_options(len(members))[option]
        afters = [match.pairs[m].after for m in members]
        for m, j in zip(members, order, strict=True):
            old = pairs[m]
            perm = candidate_perms(old.before.shape, afters[j].shape)[0]
            how = "oracle" if afters[j] is not old.after else old.how
            pairs[m] = Pair(old.before, afters[j], how, perm, old.group)
    for d, option in choice.items():
        kind, which, _ = decisions[d]
        if kind == "layout":
            old = pairs[which]
            perms = candidate_perms(old.before.shape, old.after.shape)
            pairs[which] = Pair(
                old.before, old.after, "oracle", perms[min(option, len(perms) - 1)]
            )
    return pairs


def search(
    match: Match,
    consumed: set[int],
    judge: Callable[[list[Pair]], tuple[bool, float]],
    cap: int = CAP,
) -> Found:
    """The first choice the oracle accepts, fewest changes from the defaults first.

    Args:
      match: the pairs by name, shape and order, and the groups.
      consumed: before leaf indices the loss reads (only their layout is tested).
      judge: ``pairs -> (accepted, worst deviation)``.
      cap: the most converters tried.
    """
    decisions = _decisions(match, consumed)
    best: tuple[float, list[Pair]] | None = None
    tried = 0
    for choice in _choices(decisions):
        if tried >= cap:
            assert best is not None
            return Found(best[1], False, tried, True, best[0])
        pairs = _apply(match, decisions, choice)
        ok, worst = judge(pairs)
        tried += 1
        if ok:
            return Found(pairs, True, tried, False, worst)
        if best is None or worst < best[0]:
            best = (worst, pairs)
    assert best is not None
    return Found(best[1], False, tried, False, best[0])
