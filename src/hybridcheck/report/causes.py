"""One cause, one block: failures of a case that share what they are about.

A failure's cause is, in order: the cause the engine recorded (the user call that
raised, with its exception), else non-finite values if it reports a NaN or Inf
(every comparison then fails; ``all_finite`` says where), else the halves and
leaves its problem lines name
(element indices dropped: ``['kernel'][0, 1]`` is ``['kernel']``), else the
invariant alone. Failures of one case with the same cause are one block: a step that
drops the NNX half's update fails three invariants about the same two leaves, and
the report says so once.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hybridcheck.report.results import FAILED, CaseReport, InvariantResult, Report

__all__ = ["Cause", "case_causes", "cause_of", "causes"]

_LEAF = re.compile(r"half '([^']+)' leaf ((?:\[[^\]]*\])+)")
_INDEX = re.compile(r"(\[\d+(?:, *\d+)*\])+$")
_NONFINITE = re.compile(r"(?<![\w.])-?(nan|inf)(?![\w])", re.IGNORECASE)
NONFINITE = "non-finite values (NaN/Inf) in the loss, gradient or update"
"""One cause for every failure a NaN or Inf produces: all_finite names where."""


@dataclasses.dataclass
class Cause:
    """A block of the report: the failures of one case that share a cause."""

    case: str
    title: str
    invariants: list[str]
    first: InvariantResult
    others: list[InvariantResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "cause": self.title,
            "invariants": self.invariants,
            "message": self.first.message,
            "counterexample": self.first.counterexample,
            "reproduce": self.first.reproduce,
        }


def _leaves(message: str) -> list[str]:
    found = []
    for half, path in _LEAF.findall(message):
        leaf = f"{half} {_INDEX.sub('', path) or path}"
        if leaf not in found:
            found.append(leaf)
    return found


def cause_of(result: InvariantResult) -> str:
    """The cause of a failed result (see the module docstring)."""
    if result.cause:
        return result.cause
    problems = [ln for ln in result.message.splitlines() if ln.strip().startswith("- ")]
    if any(_NONFINITE.search(line) for line in problems):
        return NONFINITE
    leaves = _leaves(result.message)
    if leaves:
        shown = ", ".join(leaves[:4]) + (f" (+{len(leaves) - 4})" if leaves[4:] else "")
        return f"leaves {shown}"
    return f"{result.invariant} failed"


def case_causes(case: CaseReport) -> list[Cause]:
    """The blocks of one case, in report order."""
    blocks: dict[str, Cause] = {}
    for r in case.results:
        if r.status != FAILED:
            continue
        key = cause_of(r)
        if key in blocks:
            blocks[key].invariants.append(r.invariant)
            blocks[key].others.append(r)
        else:
            blocks[key] = Cause(case.case, key, [r.invariant], r, [])
    nonfinite = blocks.get(NONFINITE)
    if nonfinite is not None and "all_finite" in nonfinite.invariants[1:]:
        # all_finite says where the NaN is: the root, shown first
        root = next(o for o in nonfinite.others if o.invariant == "all_finite")
        nonfinite.others = [
            nonfinite.first,
            *(o for o in nonfinite.others if o is not root),
        ]
        nonfinite.first = root
        nonfinite.invariants = [
            "all_finite",
            *(n for n in nonfinite.invariants if n != "all_finite"),
        ]
    return list(blocks.values())


def causes(report: Report) -> list[Cause]:
    """Every block of ``report``, case by case, in report order."""
    return [block for c in report.cases for block in case_causes(c)]
