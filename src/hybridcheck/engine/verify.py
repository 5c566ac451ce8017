"""``verify``: every invariant of the registry over hybrid cases, under Hypothesis.

``verify(case_or_cases)`` never raises because of the user's code: an exception in
their init, loss or step is a failed invariant (or a case error) with its traceback.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hybridcheck import compat
from hybridcheck.describe.examples import decode, replay
from hybridcheck.describe.fields import given
from hybridcheck.engine.case_run import Case, kind, verify_case
from hybridcheck.engine.guard import guarded
from hybridcheck.engine.messages import DEBUG
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


def _case_list(cases: Any) -> list[Case]:
    """``cases`` as a list of distinct cases, or a TypeError/ValueError saying why."""
    kinds = "a HybridCase or MigrationCase, or a list of them"
    if isinstance(cases, Case):
        return [cases]
    if isinstance(cases, str | bytes) or not isinstance(cases, Iterable):
        raise TypeError(
            f"cases must be {kinds}, got {given(cases)}; pass the case object "
            "(hybridcheck verify file.py:NAME loads one by name)"
        )
    case_list = list(cases)
    for c in case_list:
        if not isinstance(c, Case):
            raise TypeError(f"cases must be {kinds}, got a list holding {given(c)}")
    if not case_list:
        raise ValueError(f"cases is empty: nothing to verify; pass {kinds}")
    seen: dict[str, Case] = {}
    for c in case_list:
        if c.name in seen:
            same = seen[c.name] is c
            what = "the same case" if same else "two cases with the same name"
            again = " more than once" if same else ""
            raise ValueError(
                f"cases holds {what} {c.name!r}{again}: the report, "
                "--invariant and pytest ids know a case by its name; pass each case "
                "once, under a name of its own"
            )
        seen[c.name] = c
    return case_list


def _check_invariants(invariants: Any, case_list: list[Case]) -> list[str] | None:
    """``invariants`` as a list of known names (None: all of them)."""
    if invariants is None:
        return None
    if isinstance(invariants, str) or not isinstance(invariants, Iterable):
        fix = (
            f"; write invariants=[{invariants!r}]"
            if isinstance(invariants, str)
            else ""
        )
        raise TypeError(
            "invariants must be a list of invariant names or None (all), got "
            f"{given(invariants)}{fix}"
        )
    names = list(invariants)
    if not names:
        raise ValueError(
            "invariants is empty: nothing would be checked; pass None for every "
            "invariant or a list of names"
        )
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(
            f"invariants must hold invariant names (str), got {given(bad[0])}"
        )
    known = [*REGISTRY, *(n for c in case_list for n in c.extra_checks)]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(
            f"invariants names unknown invariants {unknown}; known: {sorted(known)}"
        )
    return names


def _seconds(name: str, value: Any, *, zero: bool) -> float:
    """``value`` as a finite number of seconds (> 0, or >= 0 where ``zero``)."""
    bound = ">= 0" if zero else "> 0"
    fix = "" if zero else " (None: no limit)"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds {bound}{fix}, got {given(value)}"
        )
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise ValueError(
            f"{name} must be a finite number of seconds {bound}{fix}, got {value!r}"
        )
    return float(value)


def verify(
    cases: Case | Iterable[Case],
    *,
    profile: str = "ci",
    invariants: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    shrink_seconds: float | None = None,
    timeout: Any = _PROFILE_DEFAULT,
    debug: bool = False,
    reproduce: str | None = None,
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
        limit). A case that overruns is reported as timed out, naming the call
        that did not return and the invariant and example it was running, with
        everything finished before. Ctrl-C stops the run and returns the partial
        report (``report.interrupted`` says so).
      debug: tracebacks in the report keep hybridcheck's own frames (by default
        only the user's frames and the line that raised are shown).
      reproduce: a failure's ``reproduce`` blob (from a report): run exactly that
        example of the case it names, and only that case.

    User code cannot end the run: ``sys.exit``, ``os._exit``, a
    ``KeyboardInterrupt`` it raises itself or another ``BaseException`` stops the
    run with ``report.aborted`` naming the user's line (``report.exit_code`` 4).

    Returns:
      A :class:`Report`; ``report.ok`` is the verdict, ``report.table()`` the text.

    Raises:
      ValueError: unknown ``profile`` or invariant name; no case, or two cases
        with one name; an empty ``invariants``; negative or non-finite
        ``shrink_seconds``; a ``timeout`` that is not a finite number > 0.
      TypeError: ``cases`` holds something that is not a HybridCase or
        MigrationCase; ``invariants`` is a str or holds a non-str; ``progress``
        is not callable; ``shrink_seconds`` or ``timeout`` is not a number.
    """
    case_list = _case_list(cases)
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(
            f"profile must be one of {sorted(PROFILES)}, got {given(profile)}"
        )
    invariants = _check_invariants(invariants, case_list)
    if progress is not None and not callable(progress):
        raise TypeError(
            f"progress must be a function line -> None (e.g. print) or None, got "
            f"{given(progress)}"
        )
    if shrink_seconds is None:
        shrink_seconds = PROFILES[profile].shrink_seconds
    shrink_seconds = _seconds("shrink_seconds", shrink_seconds, zero=True)
    if timeout is _PROFILE_DEFAULT:
        timeout = PROFILES[profile].timeout
    if timeout is not None:
        timeout = _seconds("timeout", timeout, zero=False)
    say = progress or (lambda _line: None)
    examples = PROFILES[profile].examples
    reports: list[CaseReport] = []
    selected = list(invariants) if invariants is not None else None
    replayed = None
    if reproduce is not None:
        payload = decode(reproduce)
        case_list = [c for c in case_list if c.name == payload["case"]]
        if not case_list:
            raise ValueError(
                f"reproduce: the blob is for case {payload['case']!r}, which is not "
                "among the cases given; pass that case"
            )
        replayed = replay(case_list[0], payload)
    token = DEBUG.set(bool(debug))
    try:
        with guarded(), warnings.catch_warnings():
            # A NaN or Inf reaching hybridcheck's own tolerance arithmetic is
            # all_finite's finding, reported there once; numpy's RuntimeWarnings
            # from our modules would repeat it on stderr as noise.
            warnings.filterwarnings(
                "ignore", category=RuntimeWarning, module=r"hybridcheck\."
            )
            for c in case_list:
                report, cut = verify_case(
                    c,
                    examples,
                    invariants,
                    say,
                    shrink_seconds,
                    timeout,
                    PROFILES[profile].sample,
                    replayed,
                )
                reports.append(report)
                if cut.startswith(("interrupted", "aborted")):
                    return Report(
                        reports,
                        profile,
                        compat.versions(),
                        interrupted=cut if cut.startswith("interrupted") else "",
                        aborted=cut.removeprefix("aborted: ")
                        if cut.startswith("aborted")
                        else "",
                        selected=selected,
                    )
    finally:
        DEBUG.reset(token)
    return Report(reports, profile, compat.versions(), selected=selected)
