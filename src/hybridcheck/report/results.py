"""The verifier's report: results per case and invariant, as a table or JSON."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

__all__ = [
    "EXIT_CODES",
    "HELD",
    "FAILED",
    "NOT_APPLICABLE",
    "InvariantResult",
    "CaseReport",
    "Report",
]

HELD, FAILED, NOT_APPLICABLE = "held", "failed", "n/a"

EXIT_CODES: dict[str, int] = {
    "passed": 0,
    "failed": 1,
    "usage": 2,
    "nothing ran": 3,
    "aborted": 4,
    "timed out": 5,
    "interrupted": 130,
}
"""The verdict of a run and the exit code ``hybridcheck verify`` gives it.

``passed``: every selected invariant ran on at least one example and held (none
selected: every case ran at least one); ``failed``: an invariant failed or a case's
own code or data broke it; ``usage``: an argument, output path, target or case
field is wrong (found before any case runs); ``nothing ran``: no selected invariant
applied to a case, or one selected by name applied nowhere; ``aborted``: user code
ended the run (``sys.exit``, ``os._exit``, a ``KeyboardInterrupt`` or other
``BaseException`` it raised, a crash or kill of the worker); ``timed out``: a case
overran its budget (a call that did not return); ``interrupted``: Ctrl-C."""


@dataclasses.dataclass
class InvariantResult:
    """One invariant on one case.

    Attributes:
      invariant: its name (as in the registry and the README).
      status: ``"held"``, ``"failed"`` or ``"n/a"``.
      examples: examples it ran on; ``skipped_examples``: examples outside its
        precondition; ``not_sampled``: examples an expensive (sampled) invariant
        was not run on.
      seconds: time it took, shared runs counted against the first user.
      message: the failure (or n/a reason); ``counterexample``: the shrunk example.
      cause: what a failure is about (the user call that raised, the half and
        leaves it names): failures of one case with the same cause are one block.
      reproduce: a blob that replays exactly the failing example
        (``hybridcheck verify ... --reproduce BLOB``).
    """

    invariant: str
    status: str
    examples: int = 0
    skipped_examples: int = 0
    seconds: float = 0.0
    message: str = ""
    counterexample: str = ""
    not_sampled: int = 0
    cause: str = ""
    reproduce: str = ""

    @property
    def ran(self) -> bool:
        """Whether it gave a verdict on at least one example (held or failed)."""
        return self.status == FAILED or (self.status == HELD and self.examples > 0)

    def examples_text(self) -> str:
        """``"25 (+3 n/a, sampled: 72 not run)"``: a sample is never shown as full."""
        extra = []
        if self.skipped_examples:
            extra.append(f"+{self.skipped_examples} n/a")
        if self.not_sampled:
            extra.append(f"sampled: {self.not_sampled} not run")
        return f"{self.examples}" + (f" ({', '.join(extra)})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CaseReport:
    """Every invariant's result on one case, or the error that stopped the case."""

    case: str
    results: list[InvariantResult]
    traces: int = 0
    shape_buckets: int = 0
    error: str = ""
    timed_out: str = ""

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and not self.timed_out
            and all(r.status != FAILED for r in self.results)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "ok": self.ok,
            "traces": self.traces,
            "shape_buckets": self.shape_buckets,
            "error": self.error,
            "timed_out": self.timed_out,
            "results": [r.to_dict() for r in self.results],
        }


@dataclasses.dataclass
class Report:
    """What :func:`hybridcheck.engine.verify` returns; ``ok`` is the verdict."""

    cases: list[CaseReport]
    profile: str
    versions: dict[str, str]
    interrupted: str = ""
    aborted: str = ""
    selected: list[str] | None = None
    command: str = ""

    @property
    def verdict(self) -> str:
        """One word of :data:`EXIT_CODES`: what the run proved."""
        if self.interrupted:
            return "interrupted"
        if self.aborted:
            return "aborted"
        if any(c.timed_out for c in self.cases):
            return "timed out"
        if not all(c.ok for c in self.cases):
            return "failed"
        if self.nothing_ran():
            return "nothing ran"
        return "passed"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def ok(self) -> bool:
        return self.verdict == "passed"

    def nothing_ran(self) -> list[str]:
        """Why the run proves nothing: a case on which no selected invariant ran,
        an invariant selected by name that ran on no case ([] when all ran)."""
        reasons = []
        for name in self.selected or ():
            found = [r for c in self.cases for r in c.results if r.invariant == name]
            if not any(r.ran for r in found):
                why = next((r.message for r in found if r.message), "")
                applies = f": {why}" if why else " (it is for another kind of case)"
                reasons.append(f"--invariant {name} applied to no case{applies}")
        if not reasons:  # else the selected names say it already
            reasons = [
                f"case {c.case!r}: none of its {len(c.results)} selected invariants "
                "applied" + (f" ({_first_na(c)})" if c.results else " (none selected)")
                for c in self.cases
                if not c.error and not c.timed_out and not any(r.ran for r in c.results)
            ]
        if not self.cases:
            reasons.append("there is no case to verify")
        return reasons

    def counts(self) -> dict[str, int]:
        """Invariant results by outcome: ran (held + failed), held, failed, n/a."""
        results = [r for c in self.cases for r in c.results]
        return {
            "results": len(results),
            "ran": sum(r.ran for r in results),
            "held": sum(r.ran and r.status == HELD for r in results),
            "failed": sum(r.status == FAILED for r in results),
            "n/a": sum(not r.ran for r in results),
            "cases": len(self.cases),
            "cases_not_run": sum(bool(c.error) for c in self.cases),
        }

    def failures(self) -> list[tuple[str, InvariantResult]]:
        return [
            (c.case, r) for c in self.cases for r in c.results if r.status == FAILED
        ]

    def to_json(self) -> str:
        from hybridcheck.report.causes import causes

        return json.dumps(
            {
                "verdict": self.verdict,
                "exit_code": self.exit_code,
                "ok": self.ok,
                "failed": sorted({r.invariant for _, r in self.failures()}),
                "counts": self.counts(),
                "nothing_ran": self.nothing_ran(),
                "causes": [c.to_dict() for c in causes(self)],
                "profile": self.profile,
                "versions": self.versions,
                "interrupted": self.interrupted,
                "aborted": self.aborted,
                "cases": [c.to_dict() for c in self.cases],
            },
            indent=2,
        )

    def table(self) -> str:
        """A plain-text table: one row per case and invariant, then the details."""
        from hybridcheck.report import render

        return render.table(self)

    def to_markdown(self) -> str:
        """The table as GitHub-flavoured Markdown, for a job summary or PR comment."""
        from hybridcheck.report import render

        return render.markdown(self)

    def to_junit(self) -> str:
        """JUnit XML: one testsuite per case, one testcase per invariant; a failed
        invariant is a ``<failure>`` with the message and counterexample, an n/a one
        ``<skipped>`` with its reason, a case that cannot be set up an ``<error>``."""
        from hybridcheck.report.junit import junit

        return junit(self)


def _first_na(case: CaseReport) -> str:
    reason = next((r.message for r in case.results if r.message), "")
    return reason.removeprefix("no example met the precondition: ")[:120]
