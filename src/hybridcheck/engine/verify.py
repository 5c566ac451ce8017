"""``verify``: every invariant of the registry over hybrid cases, under Hypothesis.

``verify(case_or_cases)`` never raises because of the user's code: an exception in
their init, loss or step is a failed invariant (or a case error) with its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hybridcheck import compat
from hybridcheck.engine.case_run import Case, kind, verify_case
from hybridcheck.engine.profiles import PROFILES
from hybridcheck.invariants.registry import REGISTRY
from hybridcheck.report.results import CaseReport, Report

__all__ = ["verify"]


_PROFILE_DEFAULT: Any = object()  # "the profile's timeout" (None means no limit)


def known_invariants(cases: Iterable[Case] = ()) -> list[str]:
    """The registry's invariants that apply to ``cases`` (by kind: a HybridCase's
    step or a MigrationCase), then their own invariants (``extra_checks``)."""
    case_list = list(cases)
    kinds = {kind(c) for c in case_list} or {"step", "migration"}
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
    timeout: Any = _PROFILE_DEFAULT,
) -> Report:
    """Checks every applicable invariant on each case, under Hypothesis.

    Args:
      cases: a :class:`HybridCase` or :class:`MigrationCase`, or several.
      profile: ``"dev"``, ``"ci"`` or ``"thorough"`` (examples per case: see
        ``hybridcheck.engine.profiles.PROFILES``).
      invariants: only these (names as in the report); default all.
      progress: called with a short line as each case's search starts and ends.
      shrink_seconds: how long each failed invariant may shrink its counterexample
        (default: the profile's); 0 reports the first failing example found.
      timeout: seconds each case may take (default: the profile's; None: no
        limit). A case that overruns reports the invariant and example it was
        running as failed, with everything finished before. Ctrl-C stops the run
        and returns the partial report (``report.interrupted`` says so).

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
    if timeout is _PROFILE_DEFAULT:
        timeout = PROFILES[profile].timeout
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not timeout > 0
    ):
        raise ValueError(
            f"timeout must be a positive number of seconds or None, got {timeout!r}"
        )
    say = progress or (lambda _line: None)
    examples = PROFILES[profile].examples
    reports: list[CaseReport] = []
    for c in case_list:
        report, cut = verify_case(
            c,
            examples,
            invariants,
            say,
            float(shrink_seconds),
            None if timeout is None else float(timeout),
            PROFILES[profile].sample,
        )
        reports.append(report)
        if cut.startswith("interrupted"):
            return Report(reports, profile, compat.versions(), interrupted=cut)
    return Report(reports, profile, compat.versions())
