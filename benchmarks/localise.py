"""What localising a failed migration costs: ``localise_subject`` on drawn examples
of semantic mutants, the first call per shape bucket (tracing and compiling both
sides' forward and gradient passes, before in float32 and float64, after in
float64) and the later ones (run only). The verifier localises only when a
comparison fails: on each failing example it shrinks and on the conclusion, so the
later calls are what a shrink pays per step. Never asserted.

Usage: python benchmarks/localise.py [--examples 12] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from typing import Any

from hybridcheck.cases import migrations
from hybridcheck.describe.subject import shape_key
from hybridcheck.invariants.migration.localisation import (
    draw_examples,
    localise_subject,
)

MUTANTS = ("layernorm-eps", "attention-heads-swapped")


def cost(name: str, examples: int) -> dict[str, Any]:
    """Seconds per localisation: the first of each shape bucket, and the rest."""
    (mutant,) = [m for m in migrations.mutants() if m.name == name]
    case = mutant.make()
    drawn = draw_examples(case, examples)
    ms = case.subject(drawn[0].params)
    first: list[float] = []
    later: list[float] = []
    buckets: set[str] = set()
    for e in drawn:
        start = time.perf_counter()
        found = localise_subject(ms, e)
        seconds = time.perf_counter() - start
        bucket = str(shape_key(e))
        (later if bucket in buckets else first).append(seconds)
        buckets.add(bucket)
    return {
        "mutant": name,
        "modules": len(found.rows),
        "examples": len(drawn),
        "first per bucket s": statistics.median(first),
        "later s": statistics.median(later) if later else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=12)
    parser.add_argument("--json", default="bench-results/localise.json")
    args = parser.parse_args()
    rows = [cost(name, args.examples) for name in MUTANTS]
    print("| mutant | aligned rows | first per shape bucket | later (median) |")
    print("|---|---|---|---|")
    for r in rows:
        later = "-" if r["later s"] is None else f"{1000 * r['later s']:.0f} ms"
        print(
            f"| `{r['mutant']}` | {r['modules']} | {r['first per bucket s']:.2f} s "
            f"| {later} |"
        )
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
