"""Running one case: the search, shrinking, the cross-example verdicts, the budget.

:func:`verify_case` is what :func:`hybridcheck.verify` does for each case; a case
cut short (its time budget, Ctrl-C) still reports what finished.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import jax

from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.migration_case import MigrationCase
from hybridcheck.engine import search as _search
from hybridcheck.engine.budget import budget
from hybridcheck.invariants import InvariantNotApplicable
from hybridcheck.invariants.registry import REGISTRY, static_not_applicable
from hybridcheck.report.results import (
    FAILED,
    HELD,
    NOT_APPLICABLE,
    CaseReport,
    InvariantResult,
)

Case = HybridCase | MigrationCase


def kind(case: Case) -> str:
    """``"migration"`` for a MigrationCase, ``"step"`` for a HybridCase."""
    return "migration" if isinstance(case, MigrationCase) else "step"


def _short(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def _run_extra(extra: Callable[[Any, Any, float], None], _s: Any, e: Any) -> None:
    extra(e.params, e.batch, e.lr)


def _conclude(name: str, subject: Any, result: InvariantResult) -> None:
    """Runs the cross-example verdict of ``name`` into ``result``."""
    conclude = REGISTRY[name].conclude if name in REGISTRY else None
    if conclude is None or result.status != HELD:
        return
    start = time.perf_counter()
    try:
        note = conclude(subject)
        if note:  # held, with something the report must say (how it was compared)
            result.message = note
    except InvariantNotApplicable as exc:
        result.status, result.message = NOT_APPLICABLE, str(exc)
    except AssertionError as exc:
        result.status, result.message = FAILED, str(exc)
        result.counterexample = f"all {result.examples} examples drawn"
    result.seconds += time.perf_counter() - start


def verify_case(
    case: Case,
    examples: int,
    only: Sequence[str] | None,
    progress: Callable[[str], None],
    shrink_seconds: float,
    timeout: float | None,
    sample: int | None = None,
) -> tuple[CaseReport, str]:
    """One case's report, and why it was cut short ("" if it was not)."""
    try:
        subject = case.subject(case.init(jax.random.PRNGKey(0)))
    except Exception as exc:  # noqa: BLE001
        error = "".join(traceback.format_exception(exc)[-8:])
        return CaseReport(case.name, [], error=error), ""
    checks: dict[str, _search.Check] = {
        n: inv.check for n, inv in REGISTRY.items() if inv.kind == kind(case)
    }
    for extra_name, extra in case.extra_checks.items():
        checks[extra_name] = functools.partial(_run_extra, extra)
    selected = [n for n in checks if not only or n in only]
    results = {name: InvariantResult(name, HELD) for name in selected}
    active: dict[str, _search.Check] = {}
    # inputs_unchanged first: its snapshot must predate every run of the step.
    for name in sorted(selected, key=lambda n: n != "inputs_unchanged"):
        reason = (
            static_not_applicable(REGISTRY[name], subject) if name in REGISTRY else None
        )
        if reason:
            results[name].status, results[name].message = NOT_APPLICABLE, reason
        else:
            active[name] = checks[name]
    tallies = {name: _search.Tally() for name in active}
    running = _search.Running()
    cut = ""
    try:
        with budget(running, timeout):
            error = _run(
                case,
                subject,
                active,
                tallies,
                results,
                running,
                examples,
                progress,
                shrink_seconds,
                sample,
            )
    except _search.CaseTimeout:
        cut = f"the case's {timeout:g} s budget (--timeout) ran out"
    except KeyboardInterrupt:
        cut = "interrupted (Ctrl-C)"
    else:
        if error:
            report = CaseReport(
                case.name, [], error=f"drawing an example raised:\n{error}"
            )
            return report, ""
    if cut:
        _cut_short(cut, tallies, results, running)
    report = CaseReport(
        case.name,
        [results[n] for n in selected],
        traces=subject.traced.count,
        shape_buckets=len(subject.shapes_seen),
    )
    return report, cut


def _run(
    case: Case,
    subject: Any,
    active: dict[str, _search.Check],
    tallies: dict[str, _search.Tally],
    results: dict[str, InvariantResult],
    running: _search.Running,
    examples: int,
    progress: Callable[[str], None],
    shrink_seconds: float,
    sample: int | None,
) -> str:
    """Search, shrink failures, conclude; fills ``results``. Returns a drawing error."""
    progress(f"{case.name}: {len(active)} invariants, {examples} examples ...")
    start = time.perf_counter()
    drawn = case.examples()
    error = (
        _search.search(
            active,
            subject,
            drawn,
            examples,
            tallies,
            running,
            targets={
                n: None if sample is None else max(sample, REGISTRY[n].convincing)
                for n in active
                if n in REGISTRY and REGISTRY[n].sampled
            },
        )
        if active
        else ""
    )
    progress(f"{case.name}: searched in {time.perf_counter() - start:.1f} s")
    if error:
        return error
    for name, tally in tallies.items():
        result = results[name]
        _fill(result, tally)
        if tally.failure is not None:
            shrunk, note = None, " (not shrunk: shrink_seconds=0)"
            if shrink_seconds > 0:
                progress(f"{case.name}: {name} failed; shrinking ...")
                start = time.perf_counter()
                shrunk = _search.shrink(
                    name,
                    active[name],
                    subject,
                    drawn,
                    examples,
                    shrink_seconds,
                    running,
                )
                result.seconds += time.perf_counter() - start
                note = " (not reproduced alone; not shrunk)"
            message, example = shrunk or tally.failure
            result.status, result.message = FAILED, message
            result.counterexample = _short(example) + ("" if shrunk else note)
    for name in active:
        running.start(name, "the conclusion over all examples")
        _conclude(name, subject, results[name])
    return ""


def _fill(result: InvariantResult, tally: _search.Tally) -> None:
    """A result from what the search learned (n/a if no example applied)."""
    result.examples = tally.examples
    result.skipped_examples = len(tally.na_reasons)
    result.not_sampled = tally.not_sampled
    result.seconds = tally.seconds
    if tally.failure is None and tally.examples == 0:
        result.status = NOT_APPLICABLE
        reason = tally.na_reasons[0] if tally.na_reasons else "no example drawn"
        result.message = f"no example met the precondition: {reason}"


def _cut_short(
    why: str,
    tallies: dict[str, _search.Tally],
    results: dict[str, InvariantResult],
    running: _search.Running,
) -> None:
    """Results of a case cut short: the invariant that was running fails, naming
    the example; what finished keeps its verdict; the rest is not run."""
    for name, tally in tallies.items():
        result = results[name]
        if result.status != HELD:  # already final: failed, or n/a with its reason
            continue
        if tally.failure is not None:
            _fill(result, tally)
            result.status, result.message = FAILED, tally.failure[0]
            result.counterexample = _short(tally.failure[1]) + " (not shrunk)"
        elif name == running.invariant:
            _fill(result, tally)
            result.status = FAILED
            result.message = (
                f"[hybridcheck] {name}: {why} while this invariant ran on the example "
                "below: a step that hangs (an endless loop, a blocking call), or a "
                "case too slow for the budget (raise --timeout)"
            )
            result.counterexample = _short(running.example)
        elif tally.examples or tally.na_reasons:
            _fill(result, tally)
            result.message = f"partial: {why} after {tally.examples} examples"
        else:
            result.status, result.message = NOT_APPLICABLE, f"not run: {why}"
