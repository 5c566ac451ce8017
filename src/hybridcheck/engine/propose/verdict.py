"""The migration invariants on a proposed converter: the float64 comparisons of
the loss, gradient, step and trajectory, the converter's coverage and round trip
(and, with stochastic sides, the loss distribution), as ``hc.verify`` runs them."""

from __future__ import annotations

from typing import Any

from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.migration_case import MigrationCase
from hybridcheck.invariants.migration.localisation import localise as localise_case
from hybridcheck.report.results import HELD

__all__ = ["COMPARISONS", "judge_proposal", "localise"]

COMPARISONS = (
    "loss_matches_before",
    "grads_match_before",
    "step_matches_before",
    "trajectory_matches_before",
    "convert_covers_every_param",
    "roundtrip",
)
STOCHASTIC = ("loss_distribution_matches_before",)
MUST_HOLD = COMPARISONS[:5]
"""These must have run and held; the others must not fail (n/a is fine)."""


def judge_proposal(case: MigrationCase, *, profile: str = "dev") -> tuple[bool, str]:
    """(whether every migration invariant holds on ``case``, one line each)."""
    from hybridcheck.engine.verify import verify

    names = COMPARISONS + (STOCHASTIC if case.before_eval is not None else ())
    report = verify(case, profile=profile, invariants=list(names), shrink_seconds=0)
    result = report.cases[0]
    if result.error or result.timed_out:
        return False, f"the case could not run: {result.error or result.timed_out}"
    lines, ok = [], True
    for r in result.results:
        good = r.status != "failed" and (r.invariant not in MUST_HOLD or r.ran)
        ok = ok and good and (r.invariant not in MUST_HOLD or r.status == HELD)
        first = r.message.strip().splitlines()[0] if r.message.strip() else ""
        detail = f": {first}" if first and not good else ""
        lines.append(
            f"{r.invariant}: {r.status} ({r.examples_text()} examples){detail}"
        )
    return ok, "\n".join(lines)


def localise(case: MigrationCase) -> str:
    """Where the two models part (``hc.localise``)."""
    try:
        return str(localise_case(case))
    except Exception as exc:  # noqa: BLE001 - a report, not the verdict
        return f"localise could not run: {type(exc).__name__}: {exc}"


def migration(
    before: HybridCase,
    after: HybridCase,
    convert: Any,
    invert: Any,
    before_eval: HybridCase | None,
    after_eval: HybridCase | None,
) -> MigrationCase:
    """The MigrationCase of a proposal."""
    return MigrationCase(
        name=f"proposed: {before.name} -> {after.name}",
        before=before,
        after=after,
        convert=convert,
        invert=invert,
        before_eval=before_eval,
        after_eval=after_eval,
        description="the converter hybridcheck.propose_convert proposed",
    )
