"""The report as JUnit XML, for CI systems that show test results."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from hybridcheck.report.causes import case_causes
from hybridcheck.report.render import headline, names_text
from hybridcheck.report.results import FAILED

if TYPE_CHECKING:
    from hybridcheck.report.results import CaseReport, Report

__all__ = ["junit"]


def _junit_case(suite: ET.Element, c: CaseReport, counts: dict[str, int]) -> float:
    seconds = 0.0
    blocks = {r.invariant: b for b in case_causes(c) for r in [b.first, *b.others]}
    for r in c.results:
        el = ET.SubElement(
            suite,
            "testcase",
            name=r.invariant,
            classname=c.case,
            time=f"{r.seconds:.3f}",
        )
        counts["tests"] += 1
        seconds += r.seconds
        if r.status == FAILED:
            block = blocks[r.invariant]
            first = r.message.strip().splitlines()[0] if r.message else ""
            shared = (
                f"cause: {block.title} (also failed: "
                f"{names_text([n for n in block.invariants if n != r.invariant])})\n"
                if block.others
                else ""
            )
            ET.SubElement(
                el, "failure", message=first[:500]
            ).text = f"{shared}{r.message}\ncounterexample: {r.counterexample}"
            counts["failures"] += 1
        elif not r.ran:
            ET.SubElement(el, "skipped", message=(r.message or "n/a")[:500])
            counts["skipped"] += 1
    return seconds


def junit(self: Report) -> str:
    """JUnit XML: one testsuite per case, one testcase per invariant; a failed
    invariant is a ``<failure>`` (naming its cause and the invariants that share
    it), an n/a one ``<skipped>`` with its reason, a case that cannot run an
    ``<error>``; the verdict and exit code are properties of ``<testsuites>``."""
    suites = ET.Element("testsuites", name="hybridcheck")
    props = ET.SubElement(suites, "properties")
    for name, text in (
        ("verdict", self.verdict),
        ("exit_code", str(self.exit_code)),
        ("headline", headline(self)),
    ):
        ET.SubElement(props, "property", name=name, value=text)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for c in self.cases:
        suite = ET.SubElement(suites, "testsuite", name=c.case)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        problem = c.error or c.timed_out
        if problem:
            el = ET.SubElement(
                suite, "testcase", name="(case)", classname=c.case, time="0"
            )
            what = "case could not run" if c.error else "case timed out"
            ET.SubElement(el, "error", message=what).text = problem
            counts["tests"] += 1
            counts["errors"] += 1
        seconds = _junit_case(suite, c, counts)
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{seconds:.3f}")
    for key, value in totals.items():
        suites.set(key, str(value))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
