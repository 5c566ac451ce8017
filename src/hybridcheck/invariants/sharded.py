"""Data-parallel over several devices equals one device."""

from __future__ import annotations

import jax.numpy as jnp

from hybridcheck import compat
from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.subject import Example, Subject, to64
from hybridcheck.describe.trees import (
    fail,
)
from hybridcheck.invariants import _mesh as sharding
from hybridcheck.invariants._conditioning import (
    loss_precision,
    raise_if_ill_conditioned,
)
from hybridcheck.invariants._order import (
    SHARDED_TOL,
    _close_problems,
)
from hybridcheck.invariants._precision import PRECISION_ULPS
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "assert_sharded_matches_single_device",
]


def assert_sharded_matches_single_device(
    single: PyTree,
    sharded: PyTree,
    *,
    rtol: float = SHARDED_TOL["rtol"],
    atol: float = SHARDED_TOL["atol"],
) -> None:
    """The step run data-parallel over several devices equals the one-device run.

    Tolerances as for jit vs eager: the batch mean is reduced across devices in a
    different order. Pass float64 runs where the model is ill-conditioned (see
    ``check_sharded_matches_single_device`` below): float32 rounding differences
    can be amplified.
    """
    fail(
        "sharded_matches_single_device",
        _close_problems(single, sharded, ("single-device", "sharded"), rtol, atol),
        "The step is not batch-size-agnostic under sharding: a sum where a mean is "
        "meant (per-shard mean without a cross-device mean), batch statistics taken "
        "per shard, or a per-device RNG.",
    )


def check_sharded_matches_single_device(s: Subject, e: Example) -> None:
    # Compared in float64: the two runs reduce the batch in different orders, and on
    # an ill-conditioned example (BatchNorm of a constant column divides by
    # sqrt(eps)) float32 rounding alone moves the result by O(1). The bugs this is
    # for (per-shard means or statistics, per-device RNG) change it at any precision.
    with compat.enable_x64():
        params, batch, lr = to64(e.params), to64(e.batch), jnp.float64(e.lr)
        single = s.step64(params, batch, lr)
        sharded = sharding.run_data_parallel(s.step, params, batch, lr)
    # A model that runs in less than float64 inside the replay (explicit dtype=,
    # bf16 compute) differs by that precision's rounding: judged in its units.
    eps = loss_precision(s, e).eps
    tol = {k: max(v, PRECISION_ULPS * eps) for k, v in SHARDED_TOL.items()}
    try:
        assert_sharded_matches_single_device(single, sharded, **tol)
    except AssertionError:
        raise_if_ill_conditioned(s, e, with_loss=False)
        raise


# This family's rows of the registry (report order).
register(
    Invariant(
        "sharded_matches_single_device",
        "data-parallel over forced host devices ≠ one device",
        check_sharded_matches_single_device,
        needs_devices=True,
        cost=("mesh", "float64"),
    ),
)
