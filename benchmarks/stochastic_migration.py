"""False alarms and power of ``loss_distribution_matches_before``, measured.

On the built-in stochastic migration (``migrate-dropout``, exact) and its stochastic
mutants (a dropout rate 0.5 -> 0.1, a dropout moved to the input, a dropout left
out), draws the verifier's examples (derandomized Hypothesis, as the ``ci`` profile)
and, for each, the two-sample test over ``KEYS`` keys per side under several key
streams (``salt``). Prints, per case: the examples on which no key moves either
side's loss (nothing to tell apart), then over the others the share of (example,
stream) pairs whose exact p-value falls below 0.05, 0.01 and 1e-3 (for the exact
migration: the false-alarm rate at that level, which must not exceed it), the share
below the
invariant's own levels (``ALPHA / MAX_EXAMPLES`` alone, ``ALPHA / n`` over ``n``
examples), and the cost of one example once compiled. Never asserted: the
verdicts are tested in tests/invariants/test_migration_distribution.py.

Usage: python benchmarks/stochastic_migration.py [--examples 40] [--salts 25]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import jax
import numpy as np
from hypothesis import HealthCheck, given, settings

from hybridcheck.cases.migrations.dropout import dropout_migration, dropout_mutants
from hybridcheck.invariants.migration import distribution as dist


def examples_of(case: Any, n: int) -> list[Any]:
    """The first ``n`` examples a derandomized search draws."""
    drawn: list[Any] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case.examples())
    def collect(e: Any) -> None:
        drawn.append(e)

    collect()
    return drawn[:n]


def measure(case: Any, examples: int, salts: int, n_verdict: int) -> dict[str, Any]:
    ms = case.subject(case.init(jax.random.PRNGKey(0)))
    drawn = examples_of(case, examples)
    start = time.perf_counter()
    dist.sample_losses(ms, drawn[0], salt=0)  # compiles (one shape bucket)
    compile_s = time.perf_counter() - start
    ps = np.empty((len(drawn), salts))
    inert = np.zeros(len(drawn), bool)  # no key moves either side's loss
    start = time.perf_counter()
    for i, e in enumerate(drawn):
        for s in range(salts):
            sample = dist.sample_losses(ms, e, salt=1000 + s)
            ps[i, s] = sample.p
            inert[i] = max(np.ptp(sample.before), np.ptp(sample.after)) <= sample.tol
    per_example_ms = 1000 * (time.perf_counter() - start) / ps.size
    live = ps[~inert]
    # A run: n_verdict examples under one key stream, judged as the invariant does.
    runs = [
        ps[j : j + n_verdict, s].min() < dist.ALPHA / n_verdict
        for s in range(salts)
        for j in range(0, len(drawn) - n_verdict + 1, n_verdict)
    ]
    return {
        "case": case.name,
        "pairs": int(ps.size),
        "inert examples (no key moves either loss)": int(inert.sum()),
        "over the other examples: p<0.05": float(np.mean(live < 0.05)),
        "p<0.01": float(np.mean(live < 0.01)),
        "p<1e-3": float(np.mean(live < 1e-3)),
        "fails alone (p<ALPHA/MAX_EXAMPLES)": float(
            np.mean(live < dist.ALPHA / dist.MAX_EXAMPLES)
        ),
        f"runs of {n_verdict} examples failed": f"{sum(runs)} of {len(runs)}",
        "median p": float(np.median(ps)),
        "compile s (first bucket)": round(compile_s, 2),
        "ms per example": round(per_example_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--salts", type=int, default=25)
    parser.add_argument("--verdict-examples", type=int, default=8)
    args = parser.parse_args()
    cases = [dropout_migration("migrate-dropout")] + [
        m.make()
        for m in dropout_mutants()
        if m.caught_by == "loss_distribution_matches_before"
    ]
    for case in cases:
        row = measure(case, args.examples, args.salts, args.verdict_examples)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
