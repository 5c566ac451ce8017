"""``verify``: every invariant of the registry over hybrid cases, under Hypothesis.

``verify(case_or_cases)`` never raises because of the user's code: an exception in
their init, loss or step is a failed invariant (or a case error) with its traceback.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax

from hybridcheck import _search, compat
from hybridcheck.case import HybridCase
from hybridcheck.invariants import InvariantNotApplicable
from hybridcheck.migration import MigrationCase
from hybridcheck.profiles import PROFILES
from hybridcheck.registry import REGISTRY, static_not_applicable
from hybridcheck.report import (
    FAILED,
    HELD,
    NOT_APPLICABLE,
    CaseReport,
    InvariantResult,
    Report,
)

__all__ = ["verify"]


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
        conclude(subject)
    except InvariantNotApplicable as exc:
        result.status, result.message = NOT_APPLICABLE, str(exc)
    except AssertionError as exc:
        result.status, result.message = FAILED, str(exc)
        result.counterexample = f"all {result.examples} examples drawn"
    result.seconds += time.perf_counter() - start


Case = HybridCase | MigrationCase


def _kind(case: Case) -> str:
    return "migration" if isinstance(case, MigrationCase) else "step"


def _verify_case(
    case: Case,
    examples: int,
    only: Sequence[str] | None,
    progress: Callable[[str], None],
    shrink_seconds: float,
) -> CaseReport:
    try:
        subject = case.subject(case.init(jax.random.PRNGKey(0)))
    except Exception as exc:  # noqa: BLE001
        return CaseReport(
            case.name, [], error="".join(traceback.format_exception(exc)[-8:])
        )
    checks: dict[str, _search.Check] = {
        n: inv.check for n, inv in REGISTRY.items() if inv.kind == _kind(case)
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

    progress(f"{case.name}: {len(active)} invariants, {examples} examples ...")
    start = time.perf_counter()
    drawn = case.examples()
    tallies, error = (
        _search.search(active, subject, drawn, examples) if active else ({}, "")
    )
    progress(f"{case.name}: searched in {time.perf_counter() - start:.1f} s")
    if error:
        return CaseReport(case.name, [], error=f"drawing an example raised:\n{error}")
    for name, tally in tallies.items():
        result = results[name]
        result.examples = tally.examples
        result.skipped_examples = len(tally.na_reasons)
        result.seconds = tally.seconds
        if tally.failure is not None:
            shrunk, note = None, " (not shrunk: shrink_seconds=0)"
            if shrink_seconds > 0:
                progress(f"{case.name}: {name} failed; shrinking ...")
                start = time.perf_counter()
                shrunk = _search.shrink(
                    name, active[name], subject, drawn, examples, shrink_seconds
                )
                result.seconds += time.perf_counter() - start
                note = " (not reproduced alone; not shrunk)"
            message, example = shrunk or tally.failure
            result.status, result.message = FAILED, message
            result.counterexample = _short(example) + ("" if shrunk else note)
        elif tally.examples == 0:
            result.status = NOT_APPLICABLE
            reason = tally.na_reasons[0] if tally.na_reasons else "no example drawn"
            result.message = f"no example met the precondition: {reason}"
    for name in active:
        _conclude(name, subject, results[name])
    return CaseReport(
        case.name,
        [results[n] for n in selected],
        traces=subject.traced.count,
        shape_buckets=len(subject.shapes_seen),
    )


def known_invariants(cases: Iterable[Case] = ()) -> list[str]:
    """The registry's invariants that apply to ``cases`` (by kind: a HybridCase's
    step or a MigrationCase), then their extra checks."""
    case_list = list(cases)
    kinds = {_kind(c) for c in case_list} or {"step", "migration"}
    names = [n for n, inv in REGISTRY.items() if inv.kind in kinds]
    for c in case_list:
        names += [n for n in c.extra_checks if n not in names]
    return names


def verify(
    cases: Case | Iterable[Case],
    *,
    profile: str = "ci",
    invariants: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    shrink_seconds: float | None = None,
) -> Report:
    """Checks every applicable invariant on each case, under Hypothesis.

    Args:
      cases: a :class:`HybridCase` or :class:`MigrationCase`, or several.
      profile: ``"dev"``, ``"ci"`` or ``"thorough"`` (examples per case: see
        ``hybridcheck.profiles.PROFILES``).
      invariants: only these (names as in the report); default all.
      progress: called with a short line as each case's search starts and ends.
      shrink_seconds: how long each failed invariant may shrink its counterexample
        (default: the profile's); 0 reports the first failing example found.

    Returns:
      A :class:`Report`; ``report.ok`` is the verdict, ``report.table()`` the text.

    Raises:
      ValueError: unknown ``profile`` or invariant name; negative ``shrink_seconds``.
      TypeError: ``cases`` holds something that is not a HybridCase;
        ``shrink_seconds`` is not a number.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    case_list = [cases] if isinstance(cases, Case) else list(cases)
    for c in case_list:
        if not isinstance(c, Case):
            raise TypeError(
                "cases must be HybridCase or MigrationCase objects, got "
                f"{type(c).__name__}"
            )
    if not case_list:
        raise ValueError("cases is empty: pass at least one HybridCase")
    known = known_invariants()
    unknown = set(invariants or ()) - set(known)
    if unknown:
        raise ValueError(
            f"unknown invariants {sorted(unknown)}; known: {sorted(known)}"
        )
    if shrink_seconds is None:
        shrink_seconds = PROFILES[profile].shrink_seconds
    if isinstance(shrink_seconds, bool) or not isinstance(shrink_seconds, int | float):
        raise TypeError(
            f"shrink_seconds must be a number of seconds, got {shrink_seconds!r}"
        )
    if not shrink_seconds >= 0:
        raise ValueError(f"shrink_seconds must be >= 0, got {shrink_seconds!r}")
    say = progress or (lambda _line: None)
    examples = PROFILES[profile].examples
    reports = [
        _verify_case(c, examples, invariants, say, float(shrink_seconds))
        for c in case_list
    ]
    return Report(reports, profile, compat.versions())
