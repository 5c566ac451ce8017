"""Running one case: the search, shrinking, the cross-example verdicts, the budget.

:func:`verify_case` is what :func:`hybridcheck.verify` does for each case; a case
cut short (its time budget, Ctrl-C) still reports what finished.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
from hypothesis import strategies as st

from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.migration_case import MigrationCase
from hybridcheck.describe.returns import BadReturn, check_init
from hybridcheck.describe.subject import Example
from hybridcheck.describe.usercode import UserCodeError, call, format_error
from hybridcheck.engine import cut as _cut
from hybridcheck.engine import search as _search
from hybridcheck.engine.budget import budget
from hybridcheck.engine.guard import abort_reason
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


def _subject(case: Case, params: Any) -> Any:
    """The case made runnable on what its init returned; a return it cannot use
    is named as the init's (or the converter's, for a migration)."""
    try:
        subject = case.subject(params)
    except UserCodeError:
        raise
    except (TypeError, ValueError) as exc:
        where = "convert" if kind(case) == "migration" else "init"
        raise BadReturn(
            case.name, where, f"returned something unusable: {exc}"
        ) from exc
    if kind(case) == "step":
        check_init(case.name, subject, params)
    return subject


def _elsewhere(name: str) -> str:
    """Why a selected invariant does not apply to this case at all."""
    if name in REGISTRY:
        owner = "MigrationCase" if REGISTRY[name].kind == "migration" else "HybridCase"
        return f"it applies to {owner} cases only (this case is another kind)"
    return "it is another case's own invariant (extra_checks)"


def verify_case(
    case: Case,
    examples: int,
    only: Sequence[str] | None,
    progress: Callable[[str], None],
    shrink_seconds: float,
    timeout: float | None,
    sample: int | None = None,
    example: Example | None = None,
) -> tuple[CaseReport, str]:
    """One case's report, and why it was cut short ("" if it was not; ``aborted:
    ...`` when user code ended the run, ``interrupted ...`` on Ctrl-C).
    ``example``: run that one example only (a reproduced counterexample)."""
    setup = _search.Running()
    setup.invariant = "the setup (init)"
    try:
        with budget(setup, timeout):
            params = call(case.name, "init", case.init, jax.random.PRNGKey(0))
            subject = _subject(case, params)
    except _search.CaseTimeout as exc:
        text = _cut.timeout_text(timeout, exc, setup)
        return CaseReport(case.name, [], timed_out=text), text
    except Exception as exc:  # noqa: BLE001
        error = (f"{exc}\n" if isinstance(exc, UserCodeError) else "") + format_error(
            exc, debug=_search.DEBUG.get()
        )
        return CaseReport(case.name, [], error=error), ""
    except KeyboardInterrupt as exc:
        return _cut.stopped(case, exc)
    except BaseException as exc:  # noqa: BLE001 - user code ended the run
        return _cut.stopped(case, exc)
    checks: dict[str, _search.Check] = {
        n: inv.check for n, inv in REGISTRY.items() if inv.kind == kind(case)
    }
    for extra_name, extra in case.extra_checks.items():
        checks[extra_name] = functools.partial(_run_extra, extra)
    selected = [n for n in checks if not only or n in only]
    results = {name: InvariantResult(name, HELD) for name in selected}
    for name in only or ():  # named, but for another kind of case (or another case)
        if name not in checks:
            results[name] = InvariantResult(
                name, NOT_APPLICABLE, message=_elsewhere(name)
            )
            selected.append(name)
    active: dict[str, _search.Check] = {}
    for name in selected:
        if name not in checks:
            continue
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
                example,
            )
    except _search.CaseTimeout as exc:
        cut = _cut.timeout_text(timeout, exc, running)
    except BaseException as exc:  # noqa: BLE001 - Ctrl-C, or user code ending the run
        why = abort_reason(exc)
        cut = "interrupted (Ctrl-C)" if why is None else f"aborted: {why}"
    else:
        if error:
            report = CaseReport(case.name, [], error=error)
            return report, ""
    if cut:
        _cut.cut_short(cut, case, tallies, results, running)
    report = CaseReport(
        case.name,
        [results[n] for n in selected],
        traces=subject.traced.count,
        shape_buckets=len(subject.shapes_seen),
        timed_out=cut if cut.startswith("the case's") else "",
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
    example: Example | None,
) -> str:
    """Search, shrink failures, conclude; fills ``results``. Returns a drawing error."""
    progress(f"{case.name}: {len(active)} invariants, {examples} examples ...")
    start = time.perf_counter()
    drawn = case.examples() if example is None else st.just(example)
    error = (
        _search.search(
            active,
            subject,
            drawn,
            examples,
            tallies,
            running,
            targets={
                n: REGISTRY[n].target(sample)
                for n in active
                if n in REGISTRY and REGISTRY[n].sampled
            },
            prepare={
                n: prep
                for n in active
                if n in REGISTRY and (prep := REGISTRY[n].prepare) is not None
            },
        )
        if active
        else ""
    )
    progress(f"{case.name}: searched in {time.perf_counter() - start:.1f} s")
    if error:
        return error
    # Failures of one user-code cause (the case's loss raising, say) shrink once:
    # the same example, searched with the case's own preflight, serves them all.
    by_cause: dict[str, tuple[Any, str]] = {}
    for name, tally in tallies.items():
        result = results[name]
        _cut.fill(result, tally)
        if tally.failure is not None:
            shrunk, note = None, "first failing example; not shrunk: shrink_seconds=0"
            if tally.cause in by_cause:
                shrunk, note = by_cause[tally.cause]
                if shrunk is not None:
                    shrunk = (tally.failure[0], shrunk[1])
            elif shrink_seconds > 0:
                progress(f"{case.name}: {name} failed; shrinking ...")
                start = time.perf_counter()
                check = active[name]
                if tally.cause:
                    check = functools.partial(_search.preflight_then, check)
                shrunk = _search.shrink(
                    name, check, subject, drawn, examples, shrink_seconds, running
                )
                result.seconds += time.perf_counter() - start
                note = "first failing example; not reproduced alone, not shrunk"
            if tally.cause:
                by_cause.setdefault(tally.cause, (shrunk, note))
            message, failing = shrunk or tally.failure
            result.status, result.message = FAILED, message
            result.cause = tally.cause
            _cut.record(result, case, failing, "shrunk" if shrunk else note)
    for name in active:
        running.start(name, "the conclusion over all examples")
        _conclude(name, subject, results[name])
    return ""
