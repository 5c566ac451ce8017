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
)


# --- training-loop bugs, on the BatchNorm + Dropout case ---------------------------


class CaseMutant(NamedTuple):
    """A broken variant of a whole built-in case and the invariant naming its bug."""

    name: str
    make: Callable[[], Any]
    caught_by: str
    bug: str


def _stateful_case(name: str, **changes: Any) -> Any:
    import dataclasses

    from hybridcheck.cases import stateful

    return dataclasses.replace(
        stateful.CASE, name=f"mutant-{name}", extra_checks={}, **changes
    )


def _stale_stats() -> Any:
    from hybridcheck.cases import stateful

    def step(params: Any, batch: Any, lr: Any) -> Any:
        new = stateful.step(params, batch, lr)
        # BUG: the statistics the forward pass produced are dropped.
        return {
            **new,
            "nnx_stats": params["nnx_stats"],
            "linen_stats": params["linen_stats"],
        }

    return _stateful_case("stale_stats", step=step)


def _fixed_dropout_key() -> Any:
    from hybridcheck.cases import stateful

    def pinned(batch: Any) -> Any:
        return {**batch, "rng": jax.random.PRNGKey(0)}  # BUG: the key is ignored

    return _stateful_case(
        "fixed_dropout_key",
        loss=lambda p, b: stateful.loss(p, pinned(b)),
        step=lambda p, b, lr: stateful.step(p, pinned(b), lr),
        state_fn=lambda p, b: stateful.state_after_forward(p, pinned(b)),
    )


@jax.custom_vjp
def _scaled_identity(x: Any) -> Any:
    return x


# BUG: the backward pass of an identity returns half the cotangent (a custom VJP
# written for another normalisation).
_scaled_identity.defvjp(lambda x: (x, None), lambda _, ct: (0.5 * ct,))


def _wrong_custom_vjp() -> Any:
    import dataclasses

    from flax import linen as nn

    from hybridcheck.cases.seed import SEED_CASE
    from hybridcheck.describe.hybrid_case import sgd_step

    def batch_loss(params: Any, batch: Any) -> Any:
        x, y = (jnp.asarray(a) for a in batch)
        p = params.nnx
        # The NNX half's output passes through the broken custom VJP, so the
        # gradient of that half is half the true one.
        hidden = jax.nn.relu(_scaled_identity(x @ p["kernel"] + p["bias"]))
        width = params.linen["params"]["kernel"].shape[-1]
        out: Any = nn.Dense(features=width).apply(params.linen, hidden)
        return jnp.mean((out - y) ** 2)

    return dataclasses.replace(
        SEED_CASE,
        name="mutant-wrong_custom_vjp",
        loss=batch_loss,
        step=sgd_step(batch_loss),
        extra_checks={},
    )


CASE_MUTANTS: tuple[CaseMutant, ...] = (
    CaseMutant(
        "stale_stats",
        _stale_stats,
        "state_is_threaded",
        "BatchNorm statistics from the forward pass dropped: the old ones returned",
    ),
    CaseMutant(
        "fixed_dropout_key",
        _fixed_dropout_key,
        "randomness_is_used",
        "Dropout fed a constant key: the same mask on every step",
    ),
    CaseMutant(
        "wrong_custom_vjp",
        _wrong_custom_vjp,
        "grads_match_finite_differences",
        "a custom_vjp between the halves whose backward pass scales the cotangent",
    ),
)
