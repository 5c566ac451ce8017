"""What supervision costs: ``hybridcheck verify`` (a supervised worker process) against
the same command in one process, on 1 and on K copies of the seed case.

Both run as fresh processes (each pays its imports), under ``--profile dev`` and one
cheap invariant, so the difference is the supervisor: a second interpreter that
imports hybridcheck, the status file and the relayed output. Reported per run and per
case (the per-case figure is the slope between 1 and K cases).

    python benchmarks/supervision.py [--cases 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

CASES = textwrap.dedent(
    """
    import dataclasses
    from hybridcheck.cases.seed import SEED_CASE

    def cases(k):
        return [
            dataclasses.replace(SEED_CASE, name=f"seed-{{i}}", extra_checks={{}})
            for i in range(k)
        ]

    ONE = cases(1)
    MANY = cases({k})
    """
)
IN_PROCESS = (
    "import sys; from hybridcheck.entrypoints.cli import verify_in_process; "
    "sys.exit(verify_in_process(sys.argv[1:]))"
)


def _time(argv: list[str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(
                f"{argv} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "bench_cases.py")
        path.write_text(CASES.format(k=args.cases))
        rows = {}
        for name in ("ONE", "MANY"):
            verify = ["verify", f"{path}:{name}", "--profile", "dev", "--quiet"]
            verify += ["--invariant", "all_finite"]
            supervised = [sys.executable, "-m", "hybridcheck", *verify]
            in_process = [sys.executable, "-c", IN_PROCESS, *verify]
            rows[name] = (
                _time(supervised, args.rounds),
                _time(in_process, args.rounds),
            )
    (s1, p1), (sk, pk) = rows["ONE"], rows["MANY"]
    k = args.cases
    per_case = ((sk - pk) - (s1 - p1)) / (k - 1)
    print(
        f"supervised vs in process (median of {args.rounds}, dev, all_finite): "
        f"1 case {s1:.1f} s vs {p1:.1f} s (+{s1 - p1:.1f} s per run); {k} cases "
        f"{sk:.1f} s vs {pk:.1f} s; supervision per case {per_case:+.2f} s"
    )


if __name__ == "__main__":
    main()
