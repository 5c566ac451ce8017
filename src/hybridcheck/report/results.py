"""The verifier's report: results per case and invariant, as a table or JSON."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

__all__ = [
    "HELD",
    "FAILED",
    "NOT_APPLICABLE",
    "InvariantResult",
    "CaseReport",
    "Report",
]

HELD, FAILED, NOT_APPLICABLE = "held", "failed", "n/a"


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
    """

    invariant: str
    status: str
    examples: int = 0
    skipped_examples: int = 0
    seconds: float = 0.0
    message: str = ""
    counterexample: str = ""
    not_sampled: int = 0

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
    """What :func:`hybridcheck.engine.verify` returns; ``ok`` is the verdict."""

    cases: list[CaseReport]
    profile: str
    versions: dict[str, str]
    interrupted: str = ""

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(c.ok for c in self.cases)

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
                "interrupted": self.interrupted,
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
        from hybridcheck.report import render

        return render.junit(self)
