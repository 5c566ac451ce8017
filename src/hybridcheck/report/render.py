"""How a report is printed: the text table, Markdown and JUnit XML (JSON is
:meth:`Report.to_json`)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from hybridcheck.report.results import FAILED, HELD, NOT_APPLICABLE

if TYPE_CHECKING:
    from hybridcheck.report.results import Report

__all__ = ["junit", "markdown", "table"]


def table(self: Report) -> str:
    """A plain-text table: one row per case and invariant, then the details."""
    rows = [("case", "invariant", "status", "examples", "seconds")]
    for c in self.cases:
        if c.error:
            rows.append((c.case, "(case)", "error", "-", "-"))
        for r in c.results:
            rows.append(
                (
                    c.case,
                    r.invariant,
                    r.status,
                    r.examples_text(),
                    f"{r.seconds:.1f}",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
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
            elif r.message:
                details.append(f"\n{c.case} / {r.invariant}: note: {r.message}")
    if self.interrupted:
        details.append(f"\nINTERRUPTED: {self.interrupted} (partial report)")
    errors = sum(1 for c in self.cases if c.error)
    could_not_run = f", {errors} case(s) could not run" if errors else ""
    results = sum(len(c.results) for c in self.cases)
    summary = (
        f"\n{results} invariant results on {len(self.cases)} case(s): "
        f"{len(self.failures())} failed{could_not_run}. "
        f"jax {self.versions['jax']}, flax {self.versions['flax']}, "
        f"profile {self.profile}."
    )
    return "\n".join(lines) + "".join(details) + summary


def markdown(self: Report) -> str:
    """The table as GitHub-flavoured Markdown, for a job summary or PR comment."""
    icon = {HELD: "✅ held", FAILED: "❌ **failed**", NOT_APPLICABLE: "➖ n/a"}
    lines = [
        f"### hybridcheck: {'passed' if self.ok else 'FAILED'}",
        "",
        f"jax {self.versions.get('jax')}, flax {self.versions.get('flax')}, "
        f"profile `{self.profile}`"
        + (f"; **interrupted**: {self.interrupted}" if self.interrupted else ""),
        "",
        "| case | invariant | status | examples | seconds |",
        "|---|---|---|---|---|",
    ]
    for c in self.cases:
        if c.error:
            lines.append(f"| {_md(c.case)} | (case) | ❌ **error** | - | - |")
        for r in c.results:
            n = r.examples_text()
            status = icon.get(r.status, r.status)
            lines.append(
                f"| {_md(c.case)} | `{r.invariant}` | {status} | {n} | "
                f"{r.seconds:.1f} |"
            )
    for case, r in self.failures():
        lines += [
            "",
            f"<details><summary>{_md(case)} / {r.invariant}</summary>",
            "",
            "```",
            r.message,
            f"counterexample: {r.counterexample}",
            "```",
            "</details>",
        ]
    for c in self.cases:
        if c.error:
            lines += [
                "",
                f"**{_md(c.case)}** could not be set up:",
                "```",
                c.error,
                "```",
            ]
    return "\n".join(lines) + "\n"


def junit(self: Report) -> str:
    """JUnit XML: one testsuite per case, one testcase per invariant; a failed
    invariant is a ``<failure>`` with the message and counterexample, an n/a one
    ``<skipped>`` with its reason, a case that cannot be set up an ``<error>``."""
    suites = ET.Element("testsuites", name="hybridcheck")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for c in self.cases:
        suite = ET.SubElement(suites, "testsuite", name=c.case)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        seconds = 0.0
        if c.error:
            case_el = ET.SubElement(
                suite, "testcase", name="(case)", classname=c.case, time="0"
            )
            ET.SubElement(
                case_el, "error", message="case could not be set up"
            ).text = c.error
            counts["tests"] += 1
            counts["errors"] += 1
        for r in c.results:
            case_el = ET.SubElement(
                suite,
                "testcase",
                name=r.invariant,
                classname=c.case,
                time=f"{r.seconds:.3f}",
            )
            counts["tests"] += 1
            seconds += r.seconds
            if r.status == FAILED:
                first = r.message.strip().splitlines()[0] if r.message else ""
                ET.SubElement(
                    case_el, "failure", message=first[:500]
                ).text = f"{r.message}\ncounterexample: {r.counterexample}"
                counts["failures"] += 1
            elif r.status == NOT_APPLICABLE:
                ET.SubElement(case_el, "skipped", message=r.message[:500])
                counts["skipped"] += 1
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{seconds:.3f}")
    for key, value in totals.items():
        suites.set(key, str(value))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")
