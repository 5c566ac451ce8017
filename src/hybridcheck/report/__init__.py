"""The report: results per case and invariant (``results``) and how they are
printed (``render``: the text table, Markdown, JUnit; JSON from the results)."""

from hybridcheck.report.results import FAILED
from hybridcheck.report.results import HELD
from hybridcheck.report.results import NOT_APPLICABLE
from hybridcheck.report.results import CaseReport
from hybridcheck.report.results import InvariantResult
from hybridcheck.report.results import Report

__all__ = [
    "FAILED",
    "HELD",
    "NOT_APPLICABLE",
    "CaseReport",
    "InvariantResult",
    "Report",
]
