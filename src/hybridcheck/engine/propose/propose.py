"""``propose_convert``: the checkpoint converter of a migration from its two models
alone, with no hand-written rules."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import jax

from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.engine.propose import program
from hybridcheck.engine.propose.assign import Pair, match_units, units_of
from hybridcheck.engine.propose.follow import follow
from hybridcheck.engine.propose.leaves import Leaf, read_side
from hybridcheck.engine.propose.oracle import Oracle
from hybridcheck.engine.propose.order import consumption_order
from hybridcheck.engine.propose.proposal import MappingEntry, Proposal
from hybridcheck.engine.propose.search import CAP, search
from hybridcheck.engine.propose.transforms import describe
from hybridcheck.engine.propose.verdict import judge_proposal, localise, migration

__all__ = ["propose_convert"]


def _check(name: str, value: Any, optional: bool = False) -> None:
    if (optional and value is None) or isinstance(value, HybridCase):
        return
    raise TypeError(
        f"propose_convert: {name} must be a HybridCase (functional, hc.from_linen "
        f"or hc.from_nnx){' or None' if optional else ''}, got "
        f"{type(value).__name__}"
    )


def _order(case: HybridCase, params: Any, batch: Any) -> dict[int, Any]:
    """Leaf index -> where the loss first reads it; empty if it cannot be traced."""
    try:
        positions = consumption_order(case.loss, params, batch)
    except Exception:  # noqa: BLE001 - a host-side loss: no order evidence
        return {}
    return dict(enumerate(positions))


def _typed(fn: Any, like: Any) -> Any:
    """``fn`` whose result has ``like``'s pytree types (the generated source builds
    NamedTuples of its own, with the same fields)."""
    treedef = jax.tree.structure(like)

    def typed(params: Any) -> Any:
        return jax.tree.unflatten(treedef, jax.tree.leaves(fn(params)))

    return typed


def _unmatched(
    leaves: tuple[list[Leaf], list[Leaf]], pairs: list[Pair], match_left: Any
) -> list[tuple[str, str, str]]:
    out = [(side, u.label, why) for side, u, why in match_left]
    used = {("before", p.before.leaf.index) for p in pairs}
    used |= {("after", p.after.leaf.index) for p in pairs}
    for side, side_leaves in zip(("before", "after"), leaves, strict=True):
        for leaf in side_leaves:
            if (side, leaf.index) in used or any(u[1] == leaf.where for u in out):
                continue
            if leaf.kind == "rng":
                why = (
                    "RNG state is not converted (the other side's comes from its init)"
                )
            elif leaf.kind in ("opt", "counter"):
                why = f"{leaf.kind} state with no counterpart: taken from the init"
            else:
                continue
            out.append((side, leaf.where, why))
    return out


def propose_convert(
    before: HybridCase,
    after: HybridCase,
    *,
    batch: Any = None,
    before_eval: HybridCase | None = None,
    after_eval: HybridCase | None = None,
    check: bool = True,
    cap: int = CAP,
) -> Proposal:
    """Proposes the checkpoint converter from ``before``'s params to ``after``'s.

    Every leaf is matched by what is reliable first (kind, size, normalised names),
    then by the order the forward passes consume them, and what is still open (a
    layout, a pairing among same-shaped kernels) by the float64 loss comparison.
    The optimizer state and counters follow the parameters; RNG state is not
    converted.

    Args:
      before, after: the models before and after the migration, as HybridCases.
      batch: a batch, or a list of batches, for the oracle (default: drawn from
        ``before``).
      before_eval, after_eval: the models with their stochastic layers off (as in
        ``MigrationCase``): the oracle and comparisons run on them.
      check: run the migration invariants on the proposal (``passed`` then says
        whether they hold; without it, whether the oracle's losses agree).
      cap: the most converters the oracle tries.

    Returns:
      A :class:`Proposal`; ``passed`` False means no converter was found under
      which the two models agree, and ``mapping`` is the closest.

    Raises:
      TypeError: a side is not a HybridCase.
      ValueError: ``cap`` is not a positive integer.

    Example:
      >>> p = hc.propose_convert(LINEN_CASE, NNX_CASE)
      >>> pathlib.Path("convert.py").write_text(p.source())
    """
    start = time.perf_counter()
    _check("before", before)
    _check("after", after)
    _check("before_eval", before_eval, optional=True)
    _check("after_eval", after_eval, optional=True)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise ValueError(f"propose_convert: cap must be a positive int, got {cap!r}")
    key = jax.random.PRNGKey(0)
    before_like, after_like = before.init(key), after.init(key)
    bl, al = read_side(before, before_like), read_side(after, after_like)
    batches: Sequence[Any] | None = None
    if batch is not None:
        batches = list(batch) if isinstance(batch, list) else [batch]
    det = (before_eval or before, after_eval or after)
    oracle = Oracle(*det, batches=batches)
    order_b = _order(det[0], oracle.params[0], oracle.batches[0])
    order_a = _order(det[1], after_like, oracle.batches[0])
    match = match_units(*units_of(bl, al), order_b, order_a)
    names = (before.name, after.name)
    sides = ((bl, before_like), (al, after_like))

    def converters(pairs: list[Pair], header: str = "") -> tuple[Any, Any, str]:
        text = program.write_source(names, sides, pairs + follow(bl, al, pairs), header)
        convert, invert = program.load(text)
        return (
            _typed(functools.partial(convert, fresh=after_like), after_like),
            _typed(functools.partial(invert, fresh=before_like), before_like),
            text,
        )

    consumed = {i for i, pos in order_b.items() if pos is not None} or {
        x.index for x in bl
    }
    found = search(match, consumed, lambda ps: oracle.judge(converters(ps)[0]), cap)
    pairs = found.pairs + follow(bl, al, found.pairs)
    searched = (
        f"{found.tried} converter(s) tried by the float64 loss oracle on "
        f"{len(oracle.params)} examples"
        + (f" (the cap of {cap} was hit)" if found.cap_hit else "")
        + f"; worst loss deviation {found.worst:.3g}x float32 noise"
    )
    convert, invert, _ = converters(found.pairs)
    verdict = (
        "oracle: the losses agree"
        if found.passed
        else ("oracle: no converter tried makes the losses agree (this is the closest)")
    )
    passed = found.passed
    case = migration(before, after, convert, invert, before_eval, after_eval)
    if check:
        held, lines = judge_proposal(case)
        passed, verdict = passed and held, f"{verdict}\n{lines}"
    status = "PASSED" if passed else "FAILED: the two models do not compute the same"
    convert, invert, text = converters(
        found.pairs, f"Verdict: {status}.\n" + verdict.replace('"""', "'''")
    )
    mapping = [
        MappingEntry(
            p.before.label,
            p.after.label,
            describe(p.perm, p.before.shape, p.after.shape)
            + (
                f", cast {p.before.leaf.dtype} -> {p.after.leaf.dtype}"
                if p.before.leaf.dtype != p.after.leaf.dtype
                else ""
            ),
            p.how,
        )
        for p in pairs
    ]
    return Proposal(
        before=before.name,
        after=after.name,
        convert=convert,
        invert=invert,
        mapping=mapping,
        unmatched=_unmatched((bl, al), pairs, match.unmatched),
        passed=passed,
        verdict=verdict,
        search=searched,
        text=text,
        localisation="" if passed else localise(case),
        seconds=time.perf_counter() - start,
    )
