"""Deliberately broken cases (not only steps): stale statistics, a fixed dropout
key, a wrong custom VJP. Each names the invariant that must reject it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["CaseMutant", "CASE_MUTANTS"]


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
        bias = jnp.reshape(p["bias"], (1,) * (x.ndim - 1) + (-1,))  # rank-explicit
        hidden = jax.nn.relu(_scaled_identity(x @ p["kernel"] + bias))
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
