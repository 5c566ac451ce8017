"""How each built-in invariant is checked on one example of a Subject.

``check_<name>(subject, example)`` computes what invariant ``<name>`` needs (the
memoized gradient and steps, a float64 replay, a sharded run) and calls
``assert_<name>`` from :mod:`hybridcheck.invariants`. The registry
(:mod:`hybridcheck.registry`) names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat, invariants, sharding
from hybridcheck._conditioning import raise_if_ill_conditioned
from hybridcheck.invariants.updates import SMALLEST_LR
from hybridcheck.subject import Example, Subject, to64

Check = Callable[[Subject, Example], None]

KINK_JUMP = 1e-6
"""A gradient that moves by more than this (relative ``||.||^2``) within a step of
``SMALLEST_LR`` means a kink is in reach: the first-order limit is not observable."""


def new_params(s: Subject, e: Example, name: str) -> Any:
    """The jitted step's new params, failing ``name`` if their tree is not the
    params' tree (rather than letting a leaf-by-leaf comparison crash on it)."""
    new = s.jitted_result(e)
    want, got = jax.tree.structure(e.params), jax.tree.structure(new)
    if str(want) != str(got):
        invariants.fail(
            name,
            [f"the step returned new params with tree {got}; the params have {want}"],
            "A step must return the params container with every half and leaf it "
            "was given (same nesting, same keys): a half dropped, returned twice or "
            "wrapped (e.g. {'params': ...} twice) breaks the next step.",
        )
    return new


def check_grads_match_params(s: Subject, e: Example) -> None:
    invariants.assert_grads_match_params(s.trainable(e.params), s.grads(e))
    invariants.assert_grads_match_params(
        s.split(e.params),
        None,
        new_params=s.split(s.jitted_result(e), name="new params"),
    )


def check_update_changes_exactly_graded_leaves(s: Subject, e: Example) -> None:
    invariants.assert_update_changes_exactly_graded_leaves(
        s.trainable(e.params),
        s.trainable(new_params(s, e, "update_changes_exactly_graded_leaves")),
        s.grads(e),
        lr=e.lr,
        # A declared optimizer may move leaves without gradient (decoupled weight
        # decay, adamw): update_matches_tx checks its exact update instead.
        allow_change_without_grad=s.tx is not None,
    )


def gather_grads(s: Subject, e: Example) -> None:
    # Along a short trajectory, not only at initialisation: LoRA's lora_a has a zero
    # gradient at the first step (lora_b = 0) and a nonzero one from the second.
    s.trajectory(e)  # each gradient is recorded in s.grads_seen where computed


def conclude_every_half_gets_gradient(s: Subject) -> None:
    if not s.grads_seen:
        raise invariants.InvariantNotApplicable("no gradient was computed")
    invariants.assert_every_half_gets_gradient(s.grads_seen, frozen=s.frozen)


def check_loss_decrease_first_order(s: Subject, e: Example) -> None:
    with compat.enable_x64():
        params, batch = to64(e.params), to64(e.batch)
        g = s.grad_fn(params, batch)
        sq = float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(g)))

        before = float(s.loss64(params, batch))

        def loss_at(lr: float) -> float:
            if lr == 0.0:
                return before  # replayed once, read by the scale and the ratios
            new = s.step64(params, batch, jnp.float64(lr))
            # The new trainable halves with the *old* state: the step also advances
            # state (an RNG count, hence another dropout mask) that would change the
            # loss by more than the first-order term being measured.
            moved = s.join(params, {**s.split(params), **s.trainable(new)})
            return float(s.loss64(moved, batch))

        try:
            invariants.assert_loss_decrease_first_order(
                loss_at, sq, loss_scale=abs(before)
            )
        except AssertionError:
            # Only a failure pays for this probe: is a kink within reach?
            _raise_if_kink_in_reach(s, params, batch, g, sq)
            raise


def _raise_if_kink_in_reach(
    s: Subject, params: Any, batch: Any, g: Any, sq: float
) -> None:
    """The limit lr -> 0 is only reachable in floats if no kink (a ReLU input near
    0) lies within the smallest step. Probe along *our* SGD direction, so the verdict
    depends on the loss landscape only, never on the step under test."""
    halves = s.split(params)
    probe = s.join(
        params,
        {
            h: jax.tree.map(lambda p, d: p - SMALLEST_LR * d, t, g[h]) if h in g else t
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


def check_update_is_descent(s: Subject, e: Example) -> None:
    invariants.assert_update_is_descent(
        s.trainable(e.params),
        s.trainable(new_params(s, e, "update_is_descent")),
        s.grads(e),
    )


def check_sgd_update(s: Subject, e: Example) -> None:
    invariants.assert_sgd_update(
        s.trainable(e.params),
        s.trainable(new_params(s, e, "sgd_update")),
        s.grads(e),
        lr=e.lr,
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
        # s.loss is one object for the case's life: the compiled probes are shared
        # by every example of a shape bucket.
        invariants.assert_grads_match_finite_differences(
            s.loss,
            to64(e.params),
            (to64(e.batch),),
            halves=list(s.trainable(e.params)),
        )


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
