"""Run every invariant over hybrid cases under Hypothesis, and report.

``verify(case_or_cases)`` never raises because of the user's code: an exception in
their init, loss or step is a failed invariant with its traceback.
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
from hypothesis import HealthCheck, given, reject, settings
from hypothesis.errors import FailedHealthCheck, Unsatisfiable

from hybridcheck import checks, compat
from hybridcheck.case import HybridCase
from hybridcheck.invariants import InvariantNotApplicable

__all__ = ["InvariantResult", "CaseReport", "Report", "verify", "PROFILES"]

# Examples per invariant per case. Mirrors the pytest profiles in conftest.py.
PROFILES: dict[str, int] = {"dev": 10, "ci": 100, "thorough": 1000}

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


def _run_one(
    name: str,
    check: Callable[[checks.Subject, checks.Example], None],
    subject: checks.Subject,
    case: HybridCase,
    examples: int,
) -> InvariantResult:
    start = time.perf_counter()
    result = InvariantResult(name, HELD)
    reason = _static_not_applicable(name, subject)
    if reason:
        result.status, result.message = NOT_APPLICABLE, reason
        return result
    last_failure: dict[str, Any] = {}
    na_reasons: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(example=case.examples())
    def prop(example: checks.Example) -> None:
        try:
            check(subject, example)
        except InvariantNotApplicable as exc:
            na_reasons.append(str(exc))
            reject()
        except AssertionError as exc:
            last_failure.update(message=str(exc), example=example)
            raise
        except Exception as exc:  # noqa: BLE001 - the user's step crashed: a finding
            last_failure.update(
                message=(
                    f"[hybridcheck] {name}: the step raised "
                    f"{type(exc).__name__}: {exc}\n"
                    + "".join(traceback.format_exception(exc)[-6:])
                ),
                example=example,
            )
            raise
        result.examples += 1

    try:
        prop()
    except (Unsatisfiable, FailedHealthCheck):
        result.status = NOT_APPLICABLE
        result.message = f"no example met the precondition: {na_reasons[:1]}"
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        result.status = FAILED
        result.message = last_failure.get("message", f"{type(exc).__name__}: {exc}")
        result.counterexample = _short(last_failure.get("example"))
    result.skipped_examples = len(na_reasons)
    result.seconds = time.perf_counter() - start
    return result


def _run_extra(
    extra: Callable[[Any, Any, float], None], _s: checks.Subject, e: checks.Example
) -> None:
    extra(e.params, e.batch, e.lr)


def _verify_case(
    case: HybridCase,
    examples: int,
    only: Sequence[str] | None,
    progress: Callable[[str], None],
) -> CaseReport:
    try:
        subject = case.subject(case.init(jax.random.PRNGKey(0)))
    except Exception as exc:  # noqa: BLE001
        return CaseReport(
            case.name, [], error="".join(traceback.format_exception(exc)[-8:])
        )
    per_example = dict(checks.CHECKS)
    for extra_name, extra in case.extra_checks.items():
        per_example[extra_name] = functools.partial(_run_extra, extra)
    report = CaseReport(case.name, [])
    for name, check in per_example.items():
        if only and name not in only:
            continue
        progress(f"{case.name}: {name} ...")
        report.results.append(_run_one(name, check, subject, case, examples))
        progress(f"{case.name}: {name} {report.results[-1].status}")
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


def verify(
    cases: HybridCase | Iterable[HybridCase],
    *,
    profile: str = "ci",
    invariants: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Checks every applicable invariant on each case, under Hypothesis.

    Args:
      cases: a :class:`HybridCase` or several.
      profile: ``"dev"`` (10 examples per invariant), ``"ci"`` (100) or
        ``"thorough"`` (1000).
      invariants: only these (names as in the report); default all.
      progress: called with a short line as each invariant starts and ends.

    Returns:
      A :class:`Report`; ``report.ok`` is the verdict, ``report.table()`` the text.

    Raises:
      ValueError: unknown ``profile`` or invariant name.
      TypeError: ``cases`` holds something that is not a HybridCase.
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
    say = progress or (lambda _line: None)
    reports = [_verify_case(c, PROFILES[profile], invariants, say) for c in case_list]
    return Report(
        reports,
        profile,
        {
            "jax": jax.__version__,
            "flax": ".".join(map(str, compat.FLAX_VERSION)),
            "backend": jax.default_backend(),
        },
    )
