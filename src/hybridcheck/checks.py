"""The registry of invariants: each name, what it catches, and how it is checked.

Each :class:`Invariant` runs on a :class:`~hybridcheck.subject.Subject` and one
:class:`~hybridcheck.subject.Example`: it computes what it needs (the memoized
gradient and steps, a float64 replay, a sharded run) and calls ``assert_<name>``
from :mod:`hybridcheck.invariants`. Invariants judged across examples also have a
``conclude`` step, run once after the search. :func:`hybridcheck.verify`, the
pytest plugin and the property tests all drive this one table.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat, invariants, sharding
from hybridcheck._conditioning import raise_if_ill_conditioned
from hybridcheck.invariants.updates import SMALLEST_LR
from hybridcheck.subject import Example, Subject, to64

__all__ = ["Invariant", "REGISTRY", "static_not_applicable"]

Check = Callable[[Subject, Example], None]

KINK_JUMP = 1e-6
"""A gradient that moves by more than this (relative ``||.||^2``) within a step of
``SMALLEST_LR`` means a kink is in reach: the first-order limit is not observable."""


@dataclasses.dataclass(frozen=True)
class Invariant:
    """One invariant of the registry.

    Attributes:
      name: ``<name>`` of ``assert_<name>``, the report line and the README row.
      catches: one line (Markdown) saying what a failure means.
      check: ``check(subject, example)``: raises ``AssertionError`` on a failure,
        :class:`InvariantNotApplicable` outside its precondition.
      conclude: ``conclude(subject)`` for a verdict across all examples, run once
        after the search (``check`` then only gathers evidence).
      needs_sgd: applies only to plain SGD steps.
      needs_devices: applies only with two or more devices.
    """

    name: str
    catches: str
    check: Check
    conclude: Callable[[Subject], None] | None = None
    needs_sgd: bool = False
    needs_devices: bool = False


def check_grads_match_params(s: Subject, e: Example) -> None:
    invariants.assert_grads_match_params(s.trainable(e.params), s.grads(e))
    invariants.assert_grads_match_params(
        s.split(e.params),
        None,
        new_params=s.split(s.jitted_result(e), name="new params"),
    )


def check_update_changes_exactly_graded_leaves(s: Subject, e: Example) -> None:
    invariants.assert_update_changes_exactly_graded_leaves(
        s.trainable(e.params), s.trainable(s.jitted_result(e)), s.grads(e), lr=e.lr
    )


def _gather_grads(s: Subject, e: Example) -> None:
    s.grads(e)  # recorded in s.grads_seen where it is computed


def conclude_every_half_gets_gradient(s: Subject) -> None:
    if not s.grads_seen:
        raise invariants.InvariantNotApplicable("no gradient was computed")
    invariants.assert_every_half_gets_gradient(s.grads_seen, frozen=s.frozen)


def check_loss_decrease_first_order(s: Subject, e: Example) -> None:
    with compat.enable_x64():
        params, batch = to64(e.params), to64(e.batch)
        g = s.grad_fn(params, batch)
        sq = float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(g)))
        # The limit lr -> 0 is only reachable in floats if no kink (a ReLU input near
        # 0) lies within the smallest step. Probe along *our* SGD direction, so the
        # verdict depends on the loss landscape only, never on the step under test.
        halves = s.split(params)
        probe = s.join(
            params,
            {
                h: jax.tree.map(lambda p, d: p - SMALLEST_LR * d, t, g[h])
                if h in g
                else t
                for h, t in halves.items()
            },
        )
        jump = float(
            sum(
                jnp.sum(jnp.square(a - b))
                for a, b in zip(
                    jax.tree.leaves(s.grad_fn(probe, batch)),
                    jax.tree.leaves(g),
                    strict=True,
                )
            )
        )
        if jump > KINK_JUMP * sq:
            raise invariants.InvariantNotApplicable(
                f"the gradient jumps within a step of {SMALLEST_LR:g} (a kink is in "
                "reach): the first-order limit cannot be observed at this example"
            )

        def loss_at(lr: float) -> float:
            if lr == 0.0:
                return float(s.loss64(params, batch))
            return float(s.loss64(s.step64(params, batch, jnp.float64(lr)), batch))

        invariants.assert_loss_decrease_first_order(
            loss_at, sq, loss_scale=abs(loss_at(0.0))
        )


def check_update_is_descent(s: Subject, e: Example) -> None:
    invariants.assert_update_is_descent(
        s.trainable(e.params), s.trainable(s.jitted_result(e)), s.grads(e)
    )


def check_sgd_update(s: Subject, e: Example) -> None:
    invariants.assert_sgd_update(
        s.trainable(e.params), s.trainable(s.jitted_result(e)), s.grads(e), lr=e.lr
    )


def check_jit_matches_eager(s: Subject, e: Example) -> None:
    eager, jitted = s.eager_result(e), s.jitted_result(e)
    before, after_eager, after_jit = (
        s.loss64_of(e, key, p)
        for key, p in (("before", e.params), ("eager", eager), ("jitted", jitted))
    )
    try:
        invariants.assert_jit_matches_eager(
            eager, jitted, old=e.params, losses=(before, after_eager, after_jit)
        )
    except AssertionError:
        raise_if_ill_conditioned(s, e, with_loss=True, probe_step=True)
        raise


def check_grads_match_finite_differences(s: Subject, e: Example) -> None:
    with compat.enable_x64():
        params, batch = to64(e.params), to64(e.batch)
        halves = s.split(params)
        fns: dict[str, Callable[[Any], Any]] = {
            label: functools.partial(
                s.half_loss, label, halves=halves, like=params, batch=batch
            )
            for label in s.trainable(params)
        }
        invariants.assert_grads_match_finite_differences(fns, s.trainable(params))


def check_deterministic(s: Subject, e: Example) -> None:
    # The memoized run is a real earlier run; the second is always a fresh one.
    invariants.assert_deterministic(s.jitted_result(e), s.run_jitted(e))
    invariants.assert_deterministic(s.eager_result(e), s.run_eager(e))


def check_all_finite(s: Subject, e: Example) -> None:
    new = s.jitted_result(e)
    invariants.assert_all_finite(s.split(new, name="new params"), what="new_params")
    invariants.assert_all_finite({"loss": s.loss_fn(new, e.batch)}, what="")


def check_inputs_unchanged(s: Subject, e: Example) -> None:
    # The snapshot must predate every run on this example: when another invariant
    # already ran the step (and may have mutated the inputs), run it afresh here.
    already_ran = s.has_run(e)
    snapshot = jax.tree.map(lambda x: np.array(x, copy=True), (e.params, e.batch))
    if already_ran:
        s.run_jitted(e)
        s.run_eager(e)
    else:
        s.jitted_result(e)
        s.eager_result(e)
    invariants.assert_inputs_unchanged(snapshot, (e.params, e.batch))


def check_retrace_budget(s: Subject, e: Example) -> None:
    s.jitted_result(e)
    # Eager runs elsewhere call ``s.step`` itself, so ``traced`` counts jit traces.
    invariants.assert_retrace_budget(s.traced.count, len(s.shapes_seen))


def check_sharded_matches_single_device(s: Subject, e: Example) -> None:
    # Compared in float64: the two runs reduce the batch in different orders, and on
    # an ill-conditioned example (BatchNorm of a constant column divides by
    # sqrt(eps)) float32 rounding alone moves the result by O(1). The bugs this is
    # for (per-shard means or statistics, per-device RNG) change it at any precision.
    with compat.enable_x64():
        params, batch, lr = to64(e.params), to64(e.batch), jnp.float64(e.lr)
        single = s.step64(params, batch, lr)
        sharded = sharding.run_data_parallel(s.step, params, batch, lr)
    try:
        invariants.assert_sharded_matches_single_device(single, sharded)
    except AssertionError:
        raise_if_ill_conditioned(s, e, with_loss=False)
        raise


_INVARIANTS = [
    Invariant(
        "grads_match_params",
        "gradient / new params with another structure, shape or dtype than the params",
        check_grads_match_params,
    ),
    Invariant(
        "update_changes_exactly_graded_leaves",
        "a half or leaf with a gradient that the step leaves unchanged (default "
        "argnums, a half not updated, a closure, a stop_gradient); a leaf moved "
        "without gradient",
        check_update_changes_exactly_graded_leaves,
    ),
    Invariant(
        "every_half_gets_gradient",
        "across all examples, a half or leaf whose gradient is always zero (a loss "
        "that closes over one half)",
        _gather_grads,
        conclude=conclude_every_half_gets_gradient,
    ),
    Invariant(
        "loss_decrease_first_order",
        "`(L0 - L(lr)) / (lr·‖g‖²) → 1` as lr → 0, in float64: one half updated "
        "(ratio `‖g_half‖²/‖g‖²`), wrong step size, sign errors",
        check_loss_decrease_first_order,
        needs_sgd=True,
    ),
    Invariant(
        "update_is_descent",
        "per half `<new - old, -g> > 0` (holds for SGD, momentum, Adam's first "
        "step): a sign error on one half",
        check_update_is_descent,
    ),
    Invariant(
        "sgd_update",
        "for SGD steps, `new == old - lr·g` to 16 ulp, leaf by leaf",
        check_sgd_update,
        needs_sgd=True,
    ),
    Invariant(
        "jit_matches_eager",
        "Python-side state baked in at trace time (n/a on ill-conditioned examples, "
        "see below)",
        check_jit_matches_eager,
    ),
    Invariant(
        "grads_match_finite_differences",
        "wrong custom VJPs, partial stop_gradient (float64, "
        "`jax.test_util.check_grads`)",
        check_grads_match_finite_differences,
    ),
    Invariant(
        "deterministic",
        "host randomness, state carried between calls",
        check_deterministic,
    ),
    Invariant("all_finite", "NaN/Inf after one step on finite input", check_all_finite),
    Invariant("inputs_unchanged", "mutated or donated inputs", check_inputs_unchanged),
    Invariant(
        "retrace_budget",
        "more traces than distinct input shapes (lr or seed baked in as constants)",
        check_retrace_budget,
    ),
    Invariant(
        "sharded_matches_single_device",
        "data-parallel over forced host devices ≠ one device",
        check_sharded_matches_single_device,
        needs_devices=True,
    ),
]

REGISTRY: dict[str, Invariant] = {inv.name: inv for inv in _INVARIANTS}
"""Every built-in invariant by name, in report order."""


def static_not_applicable(inv: Invariant, subject: Subject) -> str | None:
    """Why ``inv`` cannot apply to ``subject`` at all (None if it may)."""
    if inv.needs_sgd and not subject.sgd:
        return "the step is not plain SGD (HybridCase.sgd is False)"
    if inv.needs_devices and len(jax.devices()) < 2:
        return (
            f"only {len(jax.devices())} device; run with XLA_FLAGS="
            "--xla_force_host_platform_device_count=4 (nox -s multidevice)"
        )
    return None
