"""Render compat-results/*.json (written by the nox compat sessions) as tables.

Usage: python tools/compat_report.py compat-results [--readme README.md]
Writes compat-results/compat-table.md and compat-table.json and prints the Markdown.
With --readme, replaces the block between the compat-table markers in the README.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import re


def _version_key(row: dict) -> tuple:
    def parse(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v))

    return parse(row["flax"]), parse(row["jax"]), row["axes"]


def load(results: pathlib.Path) -> list[dict]:
    rows = []
    for path in sorted(results.glob("*.json")):
        if path.name.endswith(".verify.json") or path.name.startswith("compat-table"):
            continue
        rows.append(json.loads(path.read_text()))
    return sorted(rows, key=_version_key)


def cell_for_case(case: dict) -> str:
    if case.get("error"):
        return "error: setup"
    failed = [r["invariant"] for r in case["results"] if r["status"] == "failed"]
    na = [r["invariant"] for r in case["results"] if r["status"] == "n/a"]
    if failed:
        return "FAIL: " + ", ".join(failed)
    return "pass" + (f" ({len(na)} n/a)" if na else "")


def table(rows: list[dict]) -> tuple[str, list[dict]]:
    cases = sorted(
        {c["case"] for r in rows for c in r.get("verify", {}).get("cases", [])}
    )
    invariants = sorted(
        {
            res["invariant"]
            for r in rows
            for c in r.get("verify", {}).get("cases", [])
            for res in c["results"]
        }
    )
    header = ["flax", "jax", "axes", "tests", *cases, "invariants"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    records = []
    for r in rows:
        rec = {"flax": r["flax"], "jax": r["jax"], "axes": r["axes"]}
        if "import_error" in r:
            # Drop the "(/path/to/site-packages/...)" part: machine-specific.
            msg = re.sub(r" \(/[^)]*\)?", "", r["import_error"] or "import failed")
            rec["status"] = "import-error: " + msg
            cells = [f"cannot import: `{msg[:90]}`"] + ["-"] * (len(cases) + 1)
        else:
            by_case = {c["case"]: c for c in r.get("verify", {}).get("cases", [])}
            case_cells = [
                cell_for_case(by_case[c])
                if c in by_case
                else "n/a (not on this release)"
                for c in cases
            ]
            failing_inv = sorted(
                {
                    res["invariant"]
                    for c in by_case.values()
                    for res in c["results"]
                    if res["status"] == "failed"
                }
            )
            inv_cell = (
                "FAIL: " + ", ".join(failing_inv)
                if failing_inv
                else f"{len(invariants)} hold"
            )
            cells = ["pass" if r.get("pytest_ok") else "FAIL", *case_cells, inv_cell]
            rec.update(
                tests=cells[0],
                cases=dict(zip(cases, case_cells, strict=True)),
                failing_invariants=failing_inv,
            )
        lines.append("| " + " | ".join([r["flax"], r["jax"], r["axes"], *cells]) + " |")
        records.append(rec)
    return "\n".join(lines), records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=pathlib.Path)
    parser.add_argument("--readme", type=pathlib.Path)
    args = parser.parse_args()
    rows = load(args.results)
    if not rows:
        raise SystemExit(f"no results in {args.results}: run `nox -s compat` first")
    markdown, records = table(rows)
    stamp = datetime.date.today().isoformat()
    markdown = (
        f"Generated {stamp} by `nox -s compat_report` (CPU, dev profile).\n\n"
        + markdown
    )
    (args.results / "compat-table.md").write_text(markdown + "\n")
    (args.results / "compat-table.json").write_text(json.dumps(records, indent=2))
    print(markdown)
    if args.readme:
        text = args.readme.read_text()
        new = re.sub(
            r"(<!-- compat-table:start -->\n).*?(<!-- compat-table:end -->)",
            lambda m: m.group(1) + markdown + "\n" + m.group(2),
            text,
            flags=re.S,
        )
        args.readme.write_text(new)


if __name__ == "__main__":
    main()
