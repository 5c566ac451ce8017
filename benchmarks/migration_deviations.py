"""How far correct and broken migrations deviate from the Linen original, per invariant.

For every built-in migration and reordering (correct: must pass) and every semantic
mutant (a bug: must fail), draws the verifier's examples and records the float64
relative deviation each comparison invariant measured (``Deviation.rel64``) and its
size in units of the original's float32 noise. Prints, per invariant, the largest
deviation of any correct migration and the smallest of any bug that moves it (each
bug's largest deviation over its examples): the margin the verdicts work in. Never
asserted: the verdicts are tested in tests/invariants/test_migration.py.

Usage: python benchmarks/migration_deviations.py [--examples 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import jax

from hybridcheck.cases import migrations
from hybridcheck.engine import search as _search
from hybridcheck.invariants.migration import EXACT_RTOL
from hybridcheck.invariants.registry import REGISTRY

COMPARISONS = (
    "loss_matches_before",
    "grads_match_before",
    "step_matches_before",
    "trajectory_matches_before",
)


def deviations(case: Any, examples: int) -> dict[str, tuple[float, float]]:
    """``{invariant: (largest rel64, largest units)}`` over the drawn examples."""
    subject = case.subject(case.init(jax.random.PRNGKey(0)))
    active = {name: REGISTRY[name].check for name in COMPARISONS}
    tallies = {name: _search.Tally() for name in COMPARISONS}
    _search.search(
        active, subject, case.examples(), examples, tallies, _search.Running()
    )
    out = {}
    for name in COMPARISONS:
        devs = [d for example in subject.evidence.get(name, []) for d in example]
        if devs:
            out[name] = (max(d.rel64 for d in devs), max(d.units for d in devs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=30)
    parser.add_argument("--json", default="bench-results/migration-deviations.json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    correct = migrations.cases() + migrations.reorderings()
    for case in correct:
        rows.append(
            {"case": case.name, "bug": None, "dev": deviations(case, args.examples)}
        )
        print(json.dumps(rows[-1]), flush=True)
    for mutant in migrations.mutants():
        rows.append(
            {
                "case": mutant.name,
                "bug": mutant.caught_by,
                "dev": deviations(mutant.make(), args.examples),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    path = pathlib.Path(args.json)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(rows, indent=2))
    print("\n| invariant | largest correct (rel64, units, case) | smallest bug |")
    print("|---|---|---|")
    for name in COMPARISONS:
        seen = [r for r in rows if name in r["dev"]]
        ok = [(r["dev"][name], r["case"]) for r in seen if not r["bug"]]
        # every bug this invariant sees at all (a bias the converter drops moves no
        # loss at init; a lost partitioning moves no value)
        bugs = [
            (r["dev"][name], r["case"])
            for r in seen
            if r["bug"] and r["dev"][name][0] > EXACT_RTOL
        ]
        worst = max(ok, default=None, key=lambda t: t[0][0])
        least = min(bugs, default=None, key=lambda t: t[0][0])
        print(f"| `{name}` | {_cell(worst)} | {_cell(least)} |")


def _cell(item: Any) -> str:
    if item is None:
        return "-"
    (rel64, units), case = item
    return f"{rel64:.2g} ({units:.2g}x noise, {case})"


if __name__ == "__main__":
    main()
