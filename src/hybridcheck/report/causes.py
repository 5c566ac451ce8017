"""One cause, one block: failures of a case that share what they are about.

A failure's cause is, in order: the cause the engine recorded (the user call that
raised, with its exception), else the halves and leaves its problem lines name
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
    return list(blocks.values())


def causes(report: Report) -> list[Cause]:
    """Every block of ``report``, case by case, in report order."""
    return [block for c in report.cases for block in case_causes(c)]
