"""Deliberately broken variants of the seed's train step: the gate's self-test.

Each mutant is one bug from the seed's pitfall list or from hybrid training in the
wild (FAILURE-MODES.md), together with the invariant that must reject it. A suite
that accepts any of these is not a gate. Signature of every step:
``step(params: HybridParams, batch: (x, y), lr) -> HybridParams``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck.cases.case_mutants import CASE_MUTANTS, CaseMutant
from hybridcheck.seed import HybridParams, grads, loss, sgd_update

__all__ = ["Mutant", "MUTANTS", "CaseMutant", "CASE_MUTANTS"]


class Mutant(NamedTuple):
    """A broken step and the invariant that names its bug."""

    name: str
    step: Callable[..., Any]
    caught_by: str
    bug: str


def default_argnums(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    # BUG: argnums defaults to 0, so only the nnx half is differentiated and the
    # Linen half is left as it was.
    g_nnx = jax.grad(lambda a, b: loss(HybridParams(a, b), x, y))(
        params.nnx, params.linen
    )
    new_nnx = jax.tree.map(lambda p, g: p - lr * g, params.nnx, g_nnx)
    return HybridParams(new_nnx, params.linen)


def linen_not_updated(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    g = grads(params, x, y)
    new = sgd_update(params, g, lr)
    return HybridParams(new.nnx, params.linen)  # BUG: forgot the Linen half


def linen_in_closure(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    captured = params.linen  # BUG: the loss closes over the Linen params
    g_nnx, g_linen = jax.grad(
        lambda a, _b: loss(HybridParams(a, captured), x, y), argnums=(0, 1)
    )(params.nnx, params.linen)
    return sgd_update(params, HybridParams(g_nnx, g_linen), lr)


def stop_gradient_at_boundary(
    params: HybridParams, batch: Any, lr: Any
) -> HybridParams:
    x, y = batch

    def broken_loss(nnx_p: Any, linen_p: Any) -> Any:
        # BUG: the hidden activations are detached where the halves meet.
        k, b = nnx_p["kernel"], nnx_p["bias"]
        h = jax.lax.stop_gradient(
            jax.nn.relu(x @ k + jnp.reshape(b, (1,) * (x.ndim - 1) + (-1,)))
        )
        from flax import linen as nn

        out = nn.Dense(linen_p["params"]["kernel"].shape[-1]).apply(linen_p, h)
        return jnp.mean((out - y) ** 2)

    g = jax.grad(broken_loss, argnums=(0, 1))(params.nnx, params.linen)
    return sgd_update(params, HybridParams(*g), lr)


def sign_error_linen(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    g = grads(params, x, y)
    new_nnx = jax.tree.map(lambda p, gg: p - lr * gg, params.nnx, g.nnx)
    new_linen = jax.tree.map(lambda p, gg: p + lr * gg, params.linen, g.linen)  # BUG
    return HybridParams(new_nnx, new_linen)


_calls = itertools.count()


def python_state(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    # BUG: a Python-side counter: eager sees it change, jit bakes in its first value.
    scale = 1.0 + 0.5 * (next(_calls) % 2)
    return sgd_update(params, grads(params, x, y), lr * scale)


_host_rng = np.random.default_rng()


def host_randomness(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    # BUG: noise from host NumPy, not from a JAX key that is an input.
    noise = float(_host_rng.normal()) * 1e-2
    return sgd_update(params, grads(params, x, y), lr * (1.0 + noise))


def nan_update(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    g = grads(params, x, y)
    # BUG: normalising by a norm that is zero for the bias at init -> 0/0.
    g = jax.tree.map(lambda t: t / jnp.linalg.norm(params.nnx["bias"]), g)
    return sgd_update(params, g, lr)


def lr_squared(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    return sgd_update(params, grads(params, x, y), lr * lr)  # BUG: step size lr^2


def swapped_half_grads(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    g = grads(params, x, y)
    # BUG: each half updated with the other half's gradient, matched by leaf name.
    k_n, b_n = g.nnx["kernel"], g.nnx["bias"]
    k_l, b_l = g.linen["params"]["kernel"], g.linen["params"]["bias"]
    fake = HybridParams(
        {"kernel": jnp.resize(k_l, k_n.shape), "bias": jnp.resize(b_l, b_n.shape)},
        {
            "params": {
                "kernel": jnp.resize(k_n, k_l.shape),
                "bias": jnp.resize(b_n, b_l.shape),
            }
        },
    )
    return sgd_update(params, fake, lr)


# A batch drawn once from the data loader, outside the step (float32, the seed's
# widest shapes); the fixed_batch mutant trains on it whatever it is given.
_FIXED = np.random.default_rng(7).normal(size=(8, 3 + 2)).astype(np.float32)


def fixed_batch(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = (jnp.asarray(a) for a in batch)
    # BUG: the step trains on a batch captured once (a module-level first batch),
    # cut to the shapes it is given, never on the batch passed in.
    rows = x.shape[0] if x.ndim > 1 else 1
    x0 = jnp.reshape(_FIXED[:rows, : x.shape[-1]], x.shape)
    y0 = jnp.reshape(_FIXED[:rows, 3 : 3 + y.shape[-1]], y.shape)
    return sgd_update(params, grads(params, x0, y0), lr)


def targets_ignored(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = batch
    # BUG: the targets come from a default (``batch.get("targets", zeros)`` with
    # the key spelled "labels" in the data): y never reaches the loss.
    return sgd_update(params, grads(params, x, jnp.zeros_like(y)), lr)


def first_microbatch_only(params: HybridParams, batch: Any, lr: Any) -> HybridParams:
    x, y = (jnp.asarray(a) for a in batch)
    k = 2 if x.ndim > 1 and x.shape[0] % 2 == 0 else 1
    m = x.shape[0] // k if x.ndim > 1 else None
    total = None
    for _ in range(k):
        # BUG: gradient accumulation slices the first micro-batch every time
        # (x[:m] where x[i*m:(i+1)*m] was meant).
        g = grads(params, x[:m], y[:m]) if m else grads(params, x, y)
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    return sgd_update(params, jax.tree.map(lambda t: t / k, total), lr)


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "default_argnums",
        default_argnums,
        "update_changes_exactly_graded_leaves",
        "jax.grad with default argnums=0: the Linen half gets no gradient",
    ),
    Mutant(
        "linen_not_updated",
        linen_not_updated,
        "update_changes_exactly_graded_leaves",
        "both gradients computed, only the nnx half updated",
    ),
    Mutant(
        "linen_in_closure",
        linen_in_closure,
        "update_changes_exactly_graded_leaves",
        "Linen params captured in a closure instead of passed to the loss",
    ),
    Mutant(
        "stop_gradient_at_boundary",
        stop_gradient_at_boundary,
        "update_changes_exactly_graded_leaves",
        "stop_gradient where the nnx half feeds the Linen half",
    ),
    Mutant(
        "sign_error_linen",
        sign_error_linen,
        "update_is_descent",
        "p + lr*g on the Linen half",
    ),
    Mutant(
        "python_state",
        python_state,
        "jit_matches_eager",
        "Python-side counter changes the step between calls",
    ),
    Mutant(
        "host_randomness",
        host_randomness,
        "deterministic",
        "host NumPy randomness inside the step",
    ),
    Mutant(
        "nan_update", nan_update, "all_finite", "division by a zero norm produces NaN"
    ),
    Mutant(
        "lr_squared",
        lr_squared,
        "loss_decrease_first_order",
        "step size is lr**2 instead of lr",
    ),
    Mutant(
        "swapped_half_grads",
        swapped_half_grads,
        "sgd_update",
        "each half updated with the other half's gradient",
    ),
    Mutant(
        "fixed_batch",
        fixed_batch,
        "step_uses_batch",
        "trains on a batch captured once, never on the batch given",
    ),
    Mutant(
        "targets_ignored",
        targets_ignored,
        "step_uses_batch",
        "the targets default to zeros: y never reaches the loss",
    ),
    Mutant(
        "first_microbatch_only",
        first_microbatch_only,
        "step_uses_batch",
        "gradient accumulation over the first micro-batch twice",
    ),
)


# --- training-loop bugs, on the BatchNorm + Dropout case ---------------------------
