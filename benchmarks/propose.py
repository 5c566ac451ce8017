"""What ``hc.propose_convert`` costs against model size.

A Linen MLP (``nn.Dense`` layers auto-named ``Dense_0 ...``) against its NNX rewrite
(a Python list ``layers/0 ...`` of ``nnx.Linear``): the names share nothing, so
every kernel and bias of one shape is paired by the order the forward passes
consume them, and the oracle confirms. Sizes of about 10 k, 1 M and 50 M params.
Per size: the proposal without the invariants (matching, jaxprs, the float64 loss
oracle on its examples: ``check=False``), and with them (``hc.verify`` dev profile
on the proposal), where ``--check-up-to`` allows. Never asserted.

Usage: python benchmarks/propose.py [--sizes 10k,1m,50m] [--check-up-to 1m]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.compat import nnx

SIZES = {  # (input, width, hidden layers): params ~ width^2 * layers
    "10k": (16, 64, 2),
    "1m": (64, 512, 4),
    "50m": (256, 2048, 12),
}
BATCH = 8


def _linen(width: int, depth: int, out: int) -> Any:
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            for _ in range(depth):
                x = jax.nn.gelu(nn.Dense(width)(x))
            return nn.Dense(out)(x)

    return MLP()


def _nnx(d_in: int, width: int, depth: int, out: int) -> Any:
    class MLP(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            dims = [d_in] + [width] * depth
            self.layers = compat.module_list(
                nnx.Linear(a, b, rngs=rngs)
                for a, b in zip(dims, dims[1:], strict=False)
            )
            self.head = nnx.Linear(width, out, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            for layer in self.layers:
                x = jax.nn.gelu(layer(x))
            return self.head(x)

    return MLP


def pair(size: str) -> tuple[Any, Any, int]:
    d_in, width, depth = SIZES[size]
    linen = _linen(width, depth, d_in)
    model = _nnx(d_in, width, depth, d_in)
    template = model(nnx.Rngs(0))

    def batches(key: Any) -> Any:
        kx, ky = jax.random.split(key)
        return (
            jax.random.normal(kx, (BATCH, d_in)),
            jax.random.normal(ky, (BATCH, d_in)),
        )

    def mse(out: Any, y: Any) -> Any:
        return jnp.mean((out - y) ** 2)

    before = hc.HybridCase(
        name=f"linen-mlp-{size}",
        init=lambda key: {"linen": linen.init(key, jnp.zeros((1, d_in)))},
        loss=lambda p, b: mse(linen.apply(p["linen"], b[0]), b[1]),
        batches=batches,
    )
    after = hc.HybridCase(
        name=f"nnx-mlp-{size}",
        init=lambda key: {"nnx": compat.params_as_dict(model(nnx.Rngs(key)))},
        loss=lambda p, b: mse(
            compat.module_with_params(template, p["nnx"])(b[0]), b[1]
        ),
        batches=batches,
    )
    n = sum(x.size for x in jax.tree.leaves(before.init(jax.random.PRNGKey(0))))
    return before, after, int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,1m,50m")
    parser.add_argument("--check-up-to", default="1m", choices=list(SIZES))
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    order = list(SIZES)
    rows = []
    for size in args.sizes.split(","):
        before, after, n = pair(size)
        checks = [False] + (
            [True] if order.index(size) <= order.index(args.check_up_to) else []
        )
        for check in checks:
            t0 = time.perf_counter()
            p = hc.propose_convert(before, after, check=check)
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "size": size,
                    "params": n,
                    "check": check,
                    "seconds": round(seconds, 2),
                    "passed": p.passed,
                    "decided": p.decided,
                    "search": p.search,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"\njax {jax.__version__}, {platform.machine()}, "
        f"{jax.devices()[0].platform}\n"
        "| model | params | check | seconds | passed | decided |\n"
        "|---|---|---|---|---|---|"
    )
    for r in rows:
        decided = ", ".join(f"{v} by {k}" for k, v in r["decided"].items())
        print(
            f"| MLP {r['size']} | {r['params']:,} | "
            f"{'invariants' if r['check'] else 'oracle only'} | {r['seconds']} | "
            f"{r['passed']} | {decided} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
