"""hybridcheck benchmarks (`nox -s bench`): what interop costs, what the suite costs.

Prints tables and writes bench-results/bench-<date>.json. Timing method: warm-up
calls, then ``--rounds`` timed calls each blocked with ``block_until_ready``; we report
the median and the interquartile range. Compile time is ``jit(...).lower().compile()``
on a fresh function (median of 3). Never asserted anywhere: speed goals live here.

Usage: python benchmarks/run.py [--rounds N] [--models seed,mlp,transformer]
                                [--skip-suite] [--suite-ci] [--properties dev,ci]
                                [--scaling 64,512,2048]
       python benchmarks/run.py --render bench-results/bench-<date>.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import routes  # noqa: E402

import hybridcheck as hc  # noqa: E402
from hybridcheck.describe.tracing import count_compiles  # noqa: E402


def _block(tree: Any) -> None:
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            leaf.block_until_ready()


def timed(fn: Any, rounds: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        _block(fn())
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        _block(fn())
        samples.append(time.perf_counter() - t0)
    q = statistics.quantiles(samples, n=4)
    return {
        "median_s": statistics.median(samples),
        "iqr_s": q[2] - q[0],
        "rounds": rounds,
    }


def bench_routes(model_names: list[str], rounds: int) -> list[dict[str, Any]]:
    """Step time per route, interleaved: each round times every route once, so a
    drift in machine speed (2 shared cores) hits all routes alike."""
    rows = []
    for name in model_names:
        model = routes.MODELS[name]()
        batch = tuple(jnp.asarray(a) for a in model.batch(np.random.default_rng(0)))
        lr = jnp.float32(1e-3)
        steps, first_call, loss0 = {}, {}, {}
        for route, build in routes.ROUTES.items():
            compiles = []
            for _ in range(3):  # a fresh build each time: trace + compile + run
                fresh, fresh_state = build(model)
                t0 = time.perf_counter()
                _, value = fresh(fresh_state, batch, lr)
                _block(value)
                compiles.append(time.perf_counter() - t0)
            first_call[route] = statistics.median(compiles)
            loss0[route] = float(value)
            steps[route] = list(build(model))
            for _ in range(3):  # warm-up
                steps[route][1], value = steps[route][0](steps[route][1], batch, lr)
                _block(value)
        samples: dict[str, list[float]] = {route: [] for route in steps}
        for _ in range(rounds):
            for route, holder in steps.items():
                t0 = time.perf_counter()
                holder[1], value = holder[0](holder[1], batch, lr)
                _block(value)
                samples[route].append(time.perf_counter() - t0)
        floor = statistics.median(samples["pure"])
        for route, times in samples.items():
            q = statistics.quantiles(times, n=4)
            row = {
                "model": name,
                "route": route,
                "step_median_ms": 1e3 * statistics.median(times),
                "step_iqr_ms": 1e3 * (q[2] - q[0]),
                "ratio_to_pure": statistics.median(times) / floor,
                "first_call_s": first_call[route],
                "loss0": loss0[route],
            }
            rows.append(row)
            print(
                f"{name:12s} {route:12s} step {row['step_median_ms']:9.3f} ms "
                f"(IQR {row['step_iqr_ms']:.3f}) x{row['ratio_to_pure']:.3f} "
                f"first call {row['first_call_s']:.2f} s loss0 {row['loss0']:.6g}",
                flush=True,
            )
    return rows


def bench_seed_step(rounds: int) -> dict[str, Any]:
    x, y = np.ones(3, np.float32), np.zeros(2, np.float32)
    with count_compiles() as compiled:
        hc.mixed_train_step(0, x, y, 0.1)
        samples = []
        for i in range(rounds):
            t0 = time.perf_counter()
            _block(hc.mixed_train_step(i + 1, x * (i % 5), y, 0.01 * (1 + i % 7)))
            samples.append(time.perf_counter() - t0)
    result = {
        "calls": rounds + 1,
        "compilations_of_seed_step": compiled["_seed_step"],
        "per_call_median_ms": 1e3 * statistics.median(samples),
    }
    print(f"mixed_train_step: {result}", flush=True)
    return result


def bench_suite(profiles: list[str]) -> list[dict[str, Any]]:
    """The verifier: wall time per profile and case, seconds and examples per second
    per invariant (its own checking time inside the shared search), traces per case
    (every invariant shares the case's jitted step, so this is per property too)."""
    from hybridcheck.cases import builtin_cases

    rows: list[dict[str, Any]] = []
    for profile in profiles:
        cases = builtin_cases() if profile == "dev" else [builtin_cases()[0]]
        t0 = time.perf_counter()
        for case in cases:
            c0 = time.perf_counter()
            report = hc.verify(case, profile=profile).cases[0]
            case_wall = time.perf_counter() - c0
            for r in report.results:
                rows.append(
                    {
                        "profile": profile,
                        "case": report.case,
                        "invariant": r.invariant,
                        "status": r.status,
                        "examples": r.examples,
                        "seconds": r.seconds,
                        "examples_per_s": r.examples / r.seconds if r.seconds else None,
                    }
                )
            rows.append(
                {
                    "profile": profile,
                    "case": report.case,
                    "invariant": "(case)",
                    "wall_s": case_wall,
                    "ok": report.ok,
                    "traces": report.traces,
                    "shape_buckets": report.shape_buckets,
                }
            )
            print(
                f"suite {profile:4s} {report.case:28s} {case_wall:6.1f} s  "
                f"ok={report.ok} traces={report.traces}/{report.shape_buckets} buckets",
                flush=True,
            )
        wall = time.perf_counter() - t0
        rows.append({"profile": profile, "case": "(all)", "wall_s": wall})
        print(f"suite {profile}: {len(cases)} case(s), {wall:.1f} s", flush=True)
    return rows


def invariant_costs(suite: list[dict[str, Any]]) -> list[str]:
    """Per invariant over the dev suite: the cases it gave a verdict on, its
    examples, its seconds in all and per example, beside its declared cost units.

    An example's shared runs (jitted step, gradient, eager step) count against the
    first invariant that needs them (inputs_unchanged for the eager step)."""
    from hybridcheck.invariants.registry import REGISTRY, cost_text

    totals: dict[str, list[float]] = {}
    for r in suite:
        if r["profile"] == "dev" and r.get("status") in ("held", "failed"):
            t = totals.setdefault(r["invariant"], [0, 0, 0.0])
            t[0], t[1], t[2] = t[0] + 1, t[1] + r["examples"], t[2] + r["seconds"]
    lines = [
        "| invariant (dev, all cases) | cost units | cases | examples | s "
        "| ms/example |",
        "|---|---|---|---|---|---|",
    ]
    for name, (cases, examples, seconds) in sorted(
        totals.items(), key=lambda t: -t[1][2]
    ):
        units = cost_text(REGISTRY[name]) if name in REGISTRY else "(extra check)"
        per = 1e3 * seconds / examples if examples else 0.0
        lines.append(
            f"| `{name}` | {units} | {cases:.0f} | {examples:.0f} | {seconds:.1f} | "
            f"{per:.0f} |"
        )
    return lines


def bench_properties(profiles: list[str]) -> list[dict[str, Any]]:
    """tests/invariants/test_properties.py under each Hypothesis profile, in one
    process: seconds and examples per second per property (pytest's JUnit report)."""
    import subprocess
    import tempfile
    import xml.etree.ElementTree as ET

    examples = {"dev": 15, "ci": 100, "thorough": 1000}
    rows: list[dict[str, Any]] = []
    root = pathlib.Path(__file__).resolve().parent.parent
    for profile in profiles:
        with tempfile.TemporaryDirectory() as tmp:
            junit = pathlib.Path(tmp) / "junit.xml"
            t0 = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    f"--junitxml={junit}",
                    "tests/invariants/test_properties.py",
                ],
                cwd=root,
                env={**os.environ, "HYPOTHESIS_PROFILE": profile},
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.perf_counter() - t0
            cases = list(ET.parse(junit).iter("testcase")) if junit.exists() else []
        for tc in cases:
            seconds = float(tc.get("time", 0.0))
            rows.append(
                {
                    "profile": profile,
                    "property": tc.get("name"),
                    "seconds": seconds,
                    "examples_per_s": examples[profile] / seconds if seconds else None,
                }
            )
        rows.append(
            {
                "profile": profile,
                "property": "(file)",
                "wall_s": wall,
                "passed": proc.returncode == 0,
            }
        )
        print(
            f"properties {profile}: {len(cases)} tests, {wall:.1f} s wall, "
            f"pytest exit {proc.returncode}",
            flush=True,
        )
    return rows


MODEL_LABELS = {
    "seed": "seed (b=8)",
    "mlp": "MLP 1024-1024-10, b=256",
    "transformer": "Embed->attention block d=128 T=64 b=16",
}


def markdown(out: dict[str, Any]) -> str:
    """The README's bench table block from one run's results."""
    lines = [
        f"Measured {out['date']} on {out['machine']}, jax {out['versions']['jax']}, "
        f"flax {'.'.join(map(str, out['versions']['flax']))}, "
        f"{out.get('rounds', '?')} "
        "interleaved rounds. Step time median in ms (ratio to pure JAX); first call "
        "(trace + compile + run) in s.",
        "",
    ]
    models = list(dict.fromkeys(r["model"] for r in out["routes"]))
    routes_ = list(dict.fromkeys(r["route"] for r in out["routes"]))
    cell = {(r["model"], r["route"]): r for r in out["routes"]}
    lines.append(
        "| route | " + " | ".join(MODEL_LABELS.get(m, m) for m in models) + " |"
    )
    lines.append("|---" * (len(models) + 1) + "|")
    for route in routes_:
        cells = [
            f"{c['step_median_ms']:.3f} (x{c['ratio_to_pure']:.2f}); "
            f"{c['first_call_s']:.2f} s"
            for c in (cell[(m, route)] for m in models)
        ]
        lines.append(f"| {route} | " + " | ".join(cells) + " |")
    seed = out["seed_step"]
    lines += [
        "",
        f"`mixed_train_step`, {seed['calls']} calls with varying seed and lr: "
        f"{seed['compilations_of_seed_step']} compilation, "
        f"{seed['per_call_median_ms']:.2f} ms per call (validation + dispatch).",
    ]
    suite = out.get("suite", [])
    if suite:
        lines += ["", "| verify | case | wall s | traces / shape buckets |"]
        lines.append("|---|---|---|---|")
        for r in suite:
            if r.get("invariant") == "(case)":
                lines.append(
                    f"| {r['profile']} | {r['case']} | {r['wall_s']:.1f} | "
                    f"{r['traces']} / {r['shape_buckets']} |"
                )
            elif r.get("case") == "(all)":
                lines.append(f"| {r['profile']} | all | {r['wall_s']:.1f} | |")
        slow = sorted(
            (r for r in suite if "examples" in r and r["profile"] == "dev"),
            key=lambda r: -r["seconds"],
        )[:3]
        lines += [
            "",
            "Slowest invariants (dev): "
            + "; ".join(
                f"{r['invariant']} on {r['case']} {r['seconds']:.1f} s "
                f"({r['examples']} examples)"
                for r in slow
            )
            + ".",
        ]
        lines += ["", *invariant_costs(suite)]
    props = out.get("properties", [])
    for profile in dict.fromkeys(r["profile"] for r in props):
        rows = [r for r in props if r["profile"] == profile and "seconds" in r]
        (file_row,) = [r for r in props if r["profile"] == profile and "wall_s" in r]
        rates = sorted(r["examples_per_s"] for r in rows if r["examples_per_s"])
        lines += [
            "",
            f"`tests/invariants/test_properties.py` under `{profile}`: "
            f"{len(rows)} properties in "
            f"{file_row['wall_s']:.1f} s (one process), "
            f"{rates[0]:.0f}-{rates[-1]:.0f} examples/s per property.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--models", default="seed,mlp,transformer")
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--suite-ci", action="store_true", help="also time `ci` (seed)")
    parser.add_argument(
        "--properties",
        default="dev,ci",
        help="profiles to time tests/invariants/test_properties.py under ('' to skip)",
    )
    parser.add_argument(
        "--render", metavar="JSON", help="only print the Markdown of a saved run"
    )
    parser.add_argument(
        "--scaling",
        metavar="WIDTHS",
        default="",
        help="also run benchmarks/scaling.py at these widths (e.g. 64,512,2048)",
    )
    args = parser.parse_args()
    if args.render:
        print(markdown(json.loads(pathlib.Path(args.render).read_text())))
        return
    out: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"a {os.cpu_count()}-core {platform.machine()} machine "
        f"({jax.default_backend()} backend), python {platform.python_version()}",
        "versions": {"jax": jax.__version__, "flax": hc.compat.FLAX_VERSION},
        "rounds": args.rounds,
        "routes": bench_routes(args.models.split(","), args.rounds),
        "seed_step": bench_seed_step(args.rounds),
    }
    if not args.skip_suite:
        out["suite"] = bench_suite(["dev", "ci"] if args.suite_ci else ["dev"])
    if args.properties:
        out["properties"] = bench_properties(args.properties.split(","))
    if args.scaling:
        import subprocess

        subprocess.run(
            [
                sys.executable,
                str(pathlib.Path(__file__).parent / "scaling.py"),
                "--widths",
                args.scaling,
                "--models",
                "mlp,blocks",
            ],
            check=True,
        )
    results = pathlib.Path("bench-results")
    results.mkdir(exist_ok=True)
    path = results / f"bench-{out['date']}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    table = markdown(out)
    path.with_suffix(".md").write_text(table + "\n")
    print(f"\n{table}\n\nwrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
