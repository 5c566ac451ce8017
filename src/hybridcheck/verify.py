"""Run every invariant over hybrid cases under Hypothesis, and report.

Per case: one derandomized Hypothesis search draws examples and runs every
invariant on each (sharing the gradient and step runs of an example); each
invariant that fails then gets a search of its own that shrinks its
counterexample, within a time budget.

``verify(case_or_cases)`` never raises because of the user's code: an exception in
their init, loss or step is a failed invariant (or a case error) with its traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis.errors import FailedHealthCheck, Unsatisfiable

from hybridcheck import checks, compat
from hybridcheck.case import HybridCase
from hybridcheck.invariants import InvariantNotApplicable

__all__ = [
    "InvariantResult",
    "CaseReport",
    "Report",
    "verify",
    "PROFILES",
    "SHRINK_SECONDS",
]

# Examples per invariant per case. Mirrors the pytest profiles in conftest.py.
PROFILES: dict[str, int] = {"dev": 10, "ci": 100, "thorough": 1000}
# Seconds each failed invariant may spend shrinking its counterexample.
SHRINK_SECONDS: dict[str, float] = {"dev": 10.0, "ci": 30.0, "thorough": 120.0}

HELD, FAILED, NOT_APPLICABLE = "held", "failed", "n/a"


@dataclasses.dataclass
class InvariantResult:
    """One invariant on one case."""

    invariant: str
    status: str
    examples: int = 0
    skipped_examples: int = 0
    seconds: float = 0.0
    message: str = ""
    counterexample: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CaseReport:
    case: str
    results: list[InvariantResult]
    traces: int = 0
    shape_buckets: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(r.status != FAILED for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "ok": self.ok,
            "traces": self.traces,
            "shape_buckets": self.shape_buckets,
            "error": self.error,
            "results": [r.to_dict() for r in self.results],
        }


@dataclasses.dataclass
class Report:
    cases: list[CaseReport]
    profile: str
    versions: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cases)

    def failures(self) -> list[tuple[str, InvariantResult]]:
        return [
            (c.case, r) for c in self.cases for r in c.results if r.status == FAILED
        ]

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "profile": self.profile,
                "versions": self.versions,
                "cases": [c.to_dict() for c in self.cases],
            },
            indent=2,
        )

    def table(self) -> str:
        """A plain-text table: one row per case and invariant."""
        rows = [("case", "invariant", "status", "examples", "seconds")]
        for c in self.cases:
            if c.error:
                rows.append((c.case, "(case)", "error", "-", "-"))
            for r in c.results:
                n = f"{r.examples}" + (
                    f" (+{r.skipped_examples} n/a)" if r.skipped_examples else ""
                )
                rows.append((c.case, r.invariant, r.status, n, f"{r.seconds:.1f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out = "\n".join(lines)
        details = []
        for c in self.cases:
            if c.error:
                details.append(f"\n{c.case}: could not be set up:\n{c.error}")
            for r in c.results:
                if r.status == FAILED:
                    details.append(
                        f"\n{c.case} / {r.invariant} FAILED\n{r.message}\n"
                        f"counterexample: {r.counterexample}"
                    )
                elif r.status == NOT_APPLICABLE:
                    details.append(
                        f"\n{c.case} / {r.invariant}: not applicable: {r.message}"
                    )
        summary = (
            f"\n{sum(len(c.results) for c in self.cases)} checks on {len(self.cases)} "
            f"case(s): {len(self.failures())} failed. "
            f"jax {self.versions['jax']}, flax {self.versions['flax']}, "
            f"profile {self.profile}."
        )
        return out + "".join(details) + summary


def _static_not_applicable(name: str, subject: checks.Subject) -> str | None:
    if name in ("sgd_update", "loss_decrease_first_order") and not subject.sgd:
        return "the step is not plain SGD (HybridCase.sgd is False)"
    if name == "sharded_matches_single_device" and len(jax.devices()) < 2:
        return (
            f"only {len(jax.devices())} device; run with XLA_FLAGS="
            "--xla_force_host_platform_device_count=4 (nox -s multidevice)"
        )
    return None


def _short(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."


Check = Callable[[checks.Subject, checks.Example], None]


def _failure_message(name: str, exc: BaseException) -> str:
    if isinstance(exc, AssertionError):
        return str(exc)
    # The user's step (or loss, or init) crashed: that is a finding, not our crash.
    return (
        f"[hybridcheck] {name}: the step raised {type(exc).__name__}: {exc}\n"
        + "".join(traceback.format_exception(exc)[-6:])
    )


class _AllFailed(Exception):
    """Every invariant under search has failed: nothing left to learn."""


@dataclasses.dataclass
class _Tally:
    """What the shared search learned about one invariant."""

    examples: int = 0
    na_reasons: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    failure: tuple[str, checks.Example] | None = None


def _search(
    active: dict[str, Check],
    subject: checks.Subject,
    case: HybridCase,
    examples: int,
) -> tuple[dict[str, _Tally], str]:
    """One Hypothesis search: every invariant runs on each drawn example.

    Invariants of one example share its gradient, jitted step and eager step (the
    Subject's memo), and the draws and inits are paid once instead of once per
    invariant. An example is rejected (drawn again) only when *every* pending
    invariant finds it not applicable; an invariant that fails is not run again.
    No shrinking here: :func:`_shrink` does that for each failed invariant alone.

    Returns the tallies and, if drawing examples itself raised (the case's init or
    batch function crashed), that traceback.
    """
    tallies = {name: _Tally() for name in active}

    @_settings(examples, shrink=False)
    @given(example=case.examples())
    def search(example: checks.Example) -> None:
        applicable = False
        pending = [n for n, t in tallies.items() if t.failure is None]
        if not pending:
            raise _AllFailed
        for name in pending:
            tally = tallies[name]
            start = time.perf_counter()
            try:
                active[name](subject, example)
            except InvariantNotApplicable as exc:
                tally.na_reasons.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a failure is a finding
                tally.failure = (_failure_message(name, exc), example)
                applicable = True
            else:
                tally.examples += 1
                applicable = True
            finally:
                tally.seconds += time.perf_counter() - start
        if not applicable:
            reject()
        if all(t.failure is not None for t in tallies.values()):
            raise _AllFailed

    try:
        search()
    except (_AllFailed, Unsatisfiable, FailedHealthCheck):
        pass
    except Exception as exc:  # noqa: BLE001 - init or batches crashed while drawing
        return tallies, "".join(traceback.format_exception(exc)[-8:])
    return tallies, ""


class _ShrinkBudgetSpent(BaseException):  # noqa: N818 - a signal, not an error
    """Stops Hypothesis mid-shrink. A BaseException so Hypothesis does not take it
    for a failure of the test (it catches Exception) and lets it through at once."""


def _shrink(
    name: str,
    check: Check,
    subject: checks.Subject,
    case: HybridCase,
    examples: int,
    shrink_seconds: float,
) -> tuple[str, checks.Example] | None:
    """A search for ``name`` alone, shrinking its failure; None if none is found.

    Shrinking replays the step many times (eagerly, for some invariants), so it is
    bounded: the first candidate drawn after ``shrink_seconds`` have passed since
    the first failure stops the search, and the smallest failure so far (the latest:
    Hypothesis only tries candidates smaller than its current best) is reported.
    """
    best: dict[str, Any] = {}

    @_settings(examples, shrink=True)
    @given(example=case.examples())
    def prop(example: checks.Example) -> None:
        if best and time.perf_counter() > best["deadline"]:
            raise _ShrinkBudgetSpent
        try:
            check(subject, example)
        except InvariantNotApplicable:
            reject()
        except Exception as exc:
            best.update(
                message=_failure_message(name, exc),
                example=example,
                deadline=best.get("deadline", time.perf_counter() + shrink_seconds),
            )
            raise

    try:
        prop()
    except (_ShrinkBudgetSpent, Exception):  # noqa: BLE001 - we report `best`
        pass
    return (best["message"], best["example"]) if best else None


def _settings(examples: int, *, shrink: bool) -> settings:
    """Derandomized, no database, no deadline; shrinking only when asked."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        print_blob=False,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )


def _verify_case(
    case: HybridCase,
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
    per_example: dict[str, Check] = dict(checks.CHECKS)
    for extra_name, extra in case.extra_checks.items():
        per_example[extra_name] = functools.partial(_run_extra, extra)
    selected = [n for n in per_example if not only or n in only]
    results = {name: InvariantResult(name, HELD) for name in selected}
    active: dict[str, Check] = {}
    # inputs_unchanged first: its snapshot must predate every run of the step.
    for name in sorted(selected, key=lambda n: n != "inputs_unchanged"):
        reason = _static_not_applicable(name, subject)
        if reason:
            results[name].status, results[name].message = NOT_APPLICABLE, reason
        else:
            active[name] = per_example[name]

    progress(f"{case.name}: {len(active)} invariants, {examples} examples ...")
    start = time.perf_counter()
    tallies, error = _search(active, subject, case, examples) if active else ({}, "")
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
                shrunk = _shrink(
                    name, active[name], subject, case, examples, shrink_seconds
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

    report = CaseReport(case.name, [results[n] for n in selected])
    for name, cross in checks.CROSS_EXAMPLE_CHECKS.items():
        if only and name not in only:
            continue
        start = time.perf_counter()
        result = InvariantResult(name, HELD, examples=len(subject.grads_seen))
        try:
            cross(subject)
        except InvariantNotApplicable as exc:
            result.status, result.message = NOT_APPLICABLE, str(exc)
        except AssertionError as exc:
            result.status, result.message = FAILED, str(exc)
            result.counterexample = f"all {len(subject.grads_seen)} examples drawn"
        result.seconds = time.perf_counter() - start
        report.results.append(result)
    report.traces = subject.traced.count
    report.shape_buckets = len(subject.shapes_seen)
    return report


def _run_extra(extra: Callable[[Any, Any, float], None], _s: Any, e: Any) -> None:
    extra(e.params, e.batch, e.lr)


def verify(
    cases: HybridCase | Iterable[HybridCase],
    *,
    profile: str = "ci",
    invariants: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    shrink_seconds: float | None = None,
) -> Report:
    """Checks every applicable invariant on each case, under Hypothesis.

    Args:
      cases: a :class:`HybridCase` or several.
      profile: ``"dev"`` (10 examples per invariant), ``"ci"`` (100) or
        ``"thorough"`` (1000).
      invariants: only these (names as in the report); default all.
      progress: called with a short line as each case's search starts and ends.
      shrink_seconds: how long each failed invariant may shrink its counterexample
        (default: the profile's, see ``SHRINK_SECONDS``); 0 reports the first
        failing example found.

    Returns:
      A :class:`Report`; ``report.ok`` is the verdict, ``report.table()`` the text.

    Raises:
      ValueError: unknown ``profile`` or invariant name; negative ``shrink_seconds``.
      TypeError: ``cases`` holds something that is not a HybridCase;
        ``shrink_seconds`` is not a number.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    case_list = [cases] if isinstance(cases, HybridCase) else list(cases)
    for c in case_list:
        if not isinstance(c, HybridCase):
            raise TypeError(f"cases must be HybridCase objects, got {type(c).__name__}")
    if not case_list:
        raise ValueError("cases is empty: pass at least one HybridCase")
    known = set(checks.CHECKS) | set(checks.CROSS_EXAMPLE_CHECKS)
    for c in case_list:
        known |= set(c.extra_checks)
    unknown = set(invariants or ()) - known
    if unknown:
        raise ValueError(
            f"unknown invariants {sorted(unknown)}; known: {sorted(known)}"
        )
    if shrink_seconds is None:
        shrink_seconds = SHRINK_SECONDS[profile]
    if isinstance(shrink_seconds, bool) or not isinstance(shrink_seconds, int | float):
        raise TypeError(
            f"shrink_seconds must be a number of seconds, got {shrink_seconds!r}"
        )
    if not shrink_seconds >= 0:
        raise ValueError(f"shrink_seconds must be >= 0, got {shrink_seconds!r}")
    say = progress or (lambda _line: None)
    reports = [
        _verify_case(c, PROFILES[profile], invariants, say, float(shrink_seconds))
        for c in case_list
    ]
    return Report(
        reports,
        profile,
        {
            "jax": jax.__version__,
            "flax": ".".join(map(str, compat.FLAX_VERSION)),
            "backend": jax.default_backend(),
        },
    )
