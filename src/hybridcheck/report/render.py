"""How a report is printed, top-down: the verdict and the failed invariants, one
block per cause, then the full table, the invariants that did not apply (one
section, grouped by reason) and the notes. Text and Markdown here, JUnit XML in
:mod:`~hybridcheck.report.junit`, share this order; JSON (:meth:`Report.to_json`)
holds the same parts as fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybridcheck.report.causes import Cause, causes
from hybridcheck.report.results import FAILED, HELD, NOT_APPLICABLE

if TYPE_CHECKING:
    from hybridcheck.report.results import InvariantResult, Report

__all__ = ["headline", "markdown", "not_applicable", "table"]

RULE = "──"


def names_text(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    return ", ".join(unique[:8]) + (f" (+{len(unique) - 8} more)" if unique[8:] else "")


def headline(self: Report) -> str:
    """The first line: the verdict, its exit code and what it is about."""
    verdict, code = self.verdict.upper(), self.exit_code
    counts = self.counts()
    failed = [r.invariant for _, r in self.failures()]
    cases_failed = sorted(
        {c for c, _ in self.failures()}
        | {c.case for c in self.cases if c.error or c.timed_out}
    )
    if self.verdict == "passed":
        na = f"; {counts['n/a']} did not apply" if counts["n/a"] else ""
        about = f"{counts['ran']} invariant results ran and held{na}"
    elif self.verdict == "failed":
        where = (
            f"case {cases_failed[0]!r}"
            if len(cases_failed) == 1
            else f"{len(cases_failed)} of {len(self.cases)} cases"
        )
        errors = sum(bool(c.error) for c in self.cases)
        broken = [c for c in self.cases if c.error]
        if not failed and len(broken) == 1:
            first = broken[0].error.strip().splitlines()[0]
            about = f"case {broken[0].case!r} could not run: {first}"
            return f"hybridcheck: {verdict} (exit {code}): {about}"
        what = f"{len(failed)} failed" if failed else ""
        what += (", " if what and errors else "") + (
            f"{errors} case(s) could not run" if errors else ""
        )
        about = f"{what} on {where}" + (f": {names_text(failed)}" if failed else "")
    elif self.verdict == "nothing ran":
        about = "; ".join(self.nothing_ran())
    elif self.verdict == "aborted":
        about = self.aborted.splitlines()[0]
    elif self.verdict == "timed out":
        about = "; ".join(
            f"case {c.case!r}: {c.timed_out.splitlines()[0]}"
            for c in self.cases
            if c.timed_out
        )
    else:
        about = self.interrupted + " (partial report)"
    return f"hybridcheck: {verdict} (exit {code}): {about}"


def _context(self: Report) -> str:
    n = self.counts()
    cases = f"{n['cases']} case" + ("" if n["cases"] == 1 else "s")
    return (
        f"{n['results']} invariant results on {cases}: {n['ran']} ran ({n['held']} "
        f"held, {n['failed']} failed), {n['n/a']} n/a. jax "
        f"{self.versions.get('jax')}, flax {self.versions.get('flax')}, profile "
        f"{self.profile}."
    )


def _problem(r: InvariantResult) -> str:
    lines = r.message.strip().splitlines()
    first = next((ln.strip()[2:] for ln in lines if ln.strip().startswith("- ")), "")
    return first or (lines[0] if lines else "")


def _reproduce(self: Report, r: InvariantResult) -> str:
    if not r.reproduce:
        return ""
    command = self.command or "hybridcheck verify TARGET"
    if len(r.reproduce) > 2000:
        return (
            f"reproduce: {command} --invariant {r.invariant} --reproduce @FILE, FILE "
            f"holding this failure's `reproduce` field of --json ({len(r.reproduce)} "
            "characters)"
        )
    return f"reproduce: {command} --invariant {r.invariant} --reproduce {r.reproduce}"


def _cause_lines(self: Report, block: Cause) -> list[str]:
    r = block.first
    if block.others:
        message = r.message
        if r.cause and message.startswith(r.cause):  # the title says it already
            message = message[len(r.cause) :].lstrip("\n")
        lines = [
            f"{RULE} {block.case}: {len(block.invariants)} invariants FAILED on one "
            f"cause {RULE}",
            f"cause: {block.title}",
            f"failed: {names_text(block.invariants)}",
            message,
        ]
        if not r.cause:  # a user error is the same text for every invariant
            lines.append("the others, on the same cause:")
            lines += [f"  {o.invariant}: {_problem(o)}" for o in block.others]
    else:
        lines = [f"{RULE} {block.case} / {r.invariant} FAILED {RULE}", r.message]
    if r.counterexample:
        lines.append(f"counterexample: {r.counterexample}")
    repro = _reproduce(self, r)
    return [*lines, *([repro] if repro else []), ""]


def _rows(self: Report) -> list[str]:
    rows = [("case", "invariant", "verdict", "examples", "seconds")]
    for c in self.cases:
        if c.error:
            rows.append((c.case, "(case)", "error", "-", "-"))
        for r in c.results:
            verdict = r.status if r.ran or r.status != HELD else NOT_APPLICABLE
            rows.append(
                (c.case, r.invariant, verdict, r.examples_text(), f"{r.seconds:.1f}")
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def not_applicable(self: Report) -> list[tuple[str, list[str], str]]:
    """(case, invariants, reason) for every invariant that did not run, grouped."""
    groups: dict[tuple[str, str], list[str]] = {}
    for c in self.cases:
        for r in c.results:
            if not r.ran:
                reason = r.message or "no example met its precondition"
                groups.setdefault((c.case, reason), []).append(r.invariant)
    return [(case, names, reason) for (case, reason), names in groups.items()]


def _sections(self: Report) -> list[list[str]]:
    """One block per cause, each a header line and its body."""
    sections: list[list[str]] = []
    if self.aborted:
        sections.append([f"{RULE} the run was aborted {RULE}", self.aborted])
    for c in self.cases:
        if c.error:
            sections.append(
                [f"{RULE} {c.case}: could not run {RULE}", c.error.rstrip()]
            )
        if c.timed_out:
            sections.append([f"{RULE} {c.case}: timed out {RULE}", c.timed_out])
    for block in causes(self):
        sections.append(_cause_lines(self, block)[:-1])
    return sections


def _blocks(self: Report) -> list[str]:
    return [line for section in _sections(self) for line in [*section, ""]]


def table(self: Report) -> str:
    """The text report (see the module docstring)."""
    lines = [headline(self), _context(self), ""]
    lines += _blocks(self)
    lines += _rows(self)
    na = not_applicable(self)
    if na:
        count = sum(len(names) for _, names, _ in na)
        lines += ["", f"{count} invariant results did not apply:"]
        lines += [f"  {case}: {names_text(names)}: {why}" for case, names, why in na]
    notes = [
        f"  {c.case} / {r.invariant}: {r.message}"
        for c in self.cases
        for r in c.results
        if r.ran and r.status == HELD and r.message
    ]
    if notes:
        lines += ["", "notes:", *notes]
    if self.interrupted:
        lines += ["", f"INTERRUPTED: {self.interrupted} (partial report)"]
    lines += [
        "",
        f"verdict: {self.verdict.upper()} (exit {self.exit_code}). " + _context(self),
    ]
    return "\n".join(lines)


def markdown(self: Report) -> str:
    """The report as GitHub-flavoured Markdown, for a job summary or PR comment."""
    icon = {HELD: "✅ held", FAILED: "❌ **failed**", NOT_APPLICABLE: "➖ n/a"}
    lines = [f"### {_md(headline(self))}", "", _md(_context(self)), ""]
    for block in _sections(self):
        summary, *body = block
        lines += [f"<details open><summary>{_md(summary.strip('─ '))}</summary>", ""]
        lines += ["```", *body, "```", "</details>", ""]
    lines += [
        "| case | invariant | verdict | examples | seconds |",
        "|---|---|---|---|---|",
    ]
    for c in self.cases:
        if c.error:
            lines.append(f"| {_md(c.case)} | (case) | ❌ **error** | - | - |")
        for r in c.results:
            status = (
                icon[r.status] if r.ran or r.status != HELD else icon[NOT_APPLICABLE]
            )
            lines.append(
                f"| {_md(c.case)} | `{r.invariant}` | {status} | {r.examples_text()} | "
                f"{r.seconds:.1f} |"
            )
    na = not_applicable(self)
    if na:
        lines += ["", "**Did not apply:**", ""]
        lines += [
            f"- {_md(case)}: {_md(names_text(n))}: {_md(why)}" for case, n, why in na
        ]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")
