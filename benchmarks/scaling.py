"""Gate cost against model size: verify wall time (dev, ci) beside one train step.

A hybrid MLP (``nnx.Linear`` 64->W, GELU, Linen ``Dense`` W->W, GELU, ``Dense``
W->8, batch 32) and a hybrid block stack (NNX LayerNorm + MLP blocks with a Linen
Dense head), at growing widths. For each size: parameters, the median time of one
jitted train step (after compilation), and ``hc.verify`` wall time per profile, so
the ratio "verify cost / step cost" is visible. Never asserted: speed goals live here.

The ratio "verify / step" shows whether the gate's cost grows with the model like the
step does: ``ci marginal`` is (ci - dev) / (100 - 10 examples), the cost of one more
example beyond compilation; its ratio to one step should stay flat as W grows.

Usage: python benchmarks/scaling.py [--widths 64,512,2048] [--profiles dev,ci]
                                    [--models mlp,blocks] [--ci-up-to PARAMS]
                                    [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from hypothesis import strategies as st

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.describe import strategies as hst

IN, OUT, BATCH = 64, 8, 32


class Encoder(nnx.Module):
    def __init__(self, width: int, rngs: Any) -> None:
        self.fc = nnx.Linear(IN, width, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return jax.nn.gelu(self.fc(x))


class Blocks(nnx.Module):
    """``depth`` pre-norm residual MLP blocks (attributes, not lists: every release
    of NNX the matrix covers handles attributes alike)."""

    def __init__(self, width: int, depth: int, rngs: Any) -> None:
        self.depth = depth
        self.inp = nnx.Linear(IN, width, rngs=rngs)
        for i in range(depth):
            setattr(self, f"norm{i}", nnx.LayerNorm(width, rngs=rngs))
            setattr(self, f"fc{i}", nnx.Linear(width, width, rngs=rngs))

    def __call__(self, x: Any) -> Any:
        h = self.inp(x)
        for i in range(self.depth):
            norm, fc = getattr(self, f"norm{i}"), getattr(self, f"fc{i}")
            h = h + jax.nn.gelu(fc(norm(h)))
        return h


class Head(nn.Module):
    width: int

    @nn.compact
    def __call__(self, h: Any) -> Any:
        h = jax.nn.gelu(nn.Dense(self.width)(h))
        return nn.Dense(OUT)(h)


def make_case(model: str, width: int) -> hc.HybridCase:
    nnx_part = (
        Encoder(width, nnx.Rngs(0)) if model == "mlp" else Blocks(width, 4, nnx.Rngs(0))
    )
    head = Head(width) if model == "mlp" else nn.Dense(OUT)

    def init(key: jax.Array) -> dict[str, Any]:
        k1, k2 = jax.random.split(key)
        part = (
            Encoder(width, nnx.Rngs(k1))
            if model == "mlp"
            else Blocks(width, 4, nnx.Rngs(k1))
        )
        return {
            "nnx": compat.params_as_dict(part),
            "linen": head.init(k2, jnp.zeros((1, width))),
        }

    def loss(params: dict[str, Any], batch: Any) -> Any:
        x, y = batch
        h = compat.module_with_params(nnx_part, params["nnx"])(x)
        return jnp.mean((head.apply(params["linen"], h) - y) ** 2)

    batches = st.tuples(
        hst.bounded_arrays((BATCH, IN), max_magnitude=2.0),
        hst.bounded_arrays((BATCH, OUT), max_magnitude=2.0),
    )
    return hc.HybridCase(
        name=f"{model}-w{width}", init=init, loss=loss, batches=batches, param_seeds=2
    )


def step_time(case: hc.HybridCase, rounds: int = 10) -> tuple[int, float]:
    params = case.init(jax.random.PRNGKey(0))
    n = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    step = jax.jit(hc.sgd_step(case.loss))
    batch = (jnp.ones((BATCH, IN)), jnp.zeros((BATCH, OUT)))
    jax.block_until_ready(step(params, batch, 0.01))
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, batch, 0.01))
        samples.append(time.perf_counter() - t0)
    return n, statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--widths", default="64,512,2048")
    parser.add_argument("--profiles", default="dev,ci")
    parser.add_argument("--models", default="mlp")
    parser.add_argument(
        "--ci-up-to",
        type=float,
        default=float("inf"),
        help="run profiles other than dev only up to this many parameters",
    )
    parser.add_argument("--json", default="bench-results/scaling.json")
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        for width in [int(w) for w in args.widths.split(",")]:
            case = make_case(model, width)
            n, step_s = step_time(case)
            row: dict[str, Any] = {
                "model": model,
                "width": width,
                "params": n,
                "step_ms": step_s * 1e3,
            }
            for profile in args.profiles.split(","):
                if profile != "dev" and n > args.ci_up_to:
                    continue
                t0 = time.perf_counter()
                report = hc.verify(case, profile=profile)
                row[f"{profile}_s"] = time.perf_counter() - t0
                row[f"{profile}_ok"] = report.ok
                row[f"{profile}_slowest"] = sorted(
                    ((r.seconds, r.invariant) for r in report.cases[0].results),
                    reverse=True,
                )[:3]
            print(json.dumps(row), flush=True)
            rows.append(row)
    path = pathlib.Path(args.json)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"jax": jax.__version__, "rows": rows}, indent=2))
    print(markdown(rows, args.profiles.split(",")))


def markdown(rows: list[dict[str, Any]], profiles: list[str]) -> str:
    """The README's table: seconds and multiples of one step, per profile."""
    lines = [
        "| model | width | params | step ms | "
        + " | ".join(f"{p} s (x step)" for p in profiles)
        + " | ci marginal per example (x step) |",
        "|---" * (5 + len(profiles)) + "|",
    ]
    for r in rows:
        cells = [
            f"{r[p + '_s']:.1f} ({r[p + '_s'] * 1e3 / r['step_ms']:.0f}x)"
            if p + "_s" in r
            else "-"
            for p in profiles
        ]
        marginal = "-"
        if "ci_s" in r and "dev_s" in r:
            extra = hc.PROFILES["ci"].examples - hc.PROFILES["dev"].examples
            per = (r["ci_s"] - r["dev_s"]) / extra
            marginal = f"{per * 1e3:.0f} ms ({per * 1e3 / r['step_ms']:.0f}x)"
        lines.append(
            f"| {r['model']} | {r['width']} | {r['params'] / 1e6:.2f} M | "
            f"{r['step_ms']:.2f} | " + " | ".join(cells) + f" | {marginal} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
