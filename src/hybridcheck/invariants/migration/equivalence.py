"""The migrated model computes what the original did: loss, gradient, one step and
a short trajectory, on converted weights, in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from hybridcheck import compat
from hybridcheck.describe.migration_case import MigrationSubject
from hybridcheck.describe.subject import Example, to64
from hybridcheck.describe.trees import (
    InvariantNotApplicable,
    leaves,
)
from hybridcheck.invariants._precision import abstract64, replay_precision
from hybridcheck.invariants.migration._update import (
    NotCompared,
    not_compared_note,
    update_deviations,
)
from hybridcheck.invariants.migration.deviation import (
    HARD_UNITS,
    SIGN_RUN,
    Deviation,
    assert_matches_before,
    deviation,
    stochastic_note,
    tree_norm,
    with_note,
)
from hybridcheck.invariants.migration.localisation import localised
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "HINTS",
    "assert_loss_matches_before",
    "assert_grads_match_before",
    "assert_step_matches_before",
    "assert_trajectory_matches_before",
]

HINTS = {
    "loss_matches_before": "The migrated model computes another loss than the model "
    "before the PR on the same converted weights: a changed epsilon or activation "
    "(exact vs tanh GELU), a transposed or mis-reshaped kernel, a dropped residual or "
    "bias, a sum where a mean was taken.",
    "grads_match_before": "The migrated model's gradient, pulled back through the "
    "converter (the chain rule: it equals the before model's gradient when both "
    "compute the same function), differs: the forward differs, or a stop_gradient or "
    "custom VJP changed.",
    "step_matches_before": "One training step of the migrated model moves the "
    "converted params or state differently: a BatchNorm momentum changed, statistics "
    "not threaded, another optimizer or learning-rate scaling.",
    "trajectory_matches_before": "A few consecutive steps drift apart: state carried "
    "between steps (statistics, optimizer moments, RNG) is not the same.",
}


def assert_loss_matches_before(deviations: Sequence[Sequence[Deviation]]) -> None:
    """The loss on the converted weights equals the original's (see
    :func:`assert_matches_before` for the verdict across examples)."""
    assert_matches_before(
        "loss_matches_before", deviations, hint=HINTS["loss_matches_before"]
    )


def assert_grads_match_before(deviations: Sequence[Sequence[Deviation]]) -> None:
    """The after gradient pulled back through ``convert`` equals the original's."""
    assert_matches_before(
        "grads_match_before", deviations, hint=HINTS["grads_match_before"]
    )


def assert_step_matches_before(deviations: Sequence[Sequence[Deviation]]) -> None:
    """One step's update of the converted params and state equals the original's."""
    assert_matches_before(
        "step_matches_before", deviations, hint=HINTS["step_matches_before"]
    )


def assert_trajectory_matches_before(
    deviations: Sequence[Sequence[Deviation]],
) -> None:
    """A few consecutive steps' update equals the original's."""
    assert_matches_before(
        "trajectory_matches_before",
        deviations,
        hint=HINTS["trajectory_matches_before"],
    )


_ASSERT = {
    "loss_matches_before": assert_loss_matches_before,
    "grads_match_before": assert_grads_match_before,
    "step_matches_before": assert_step_matches_before,
    "trajectory_matches_before": assert_trajectory_matches_before,
}


_LOCALISED = ("loss_matches_before", "grads_match_before", "step_matches_before")
"""Whose failure says where the two models part (``localise``)."""


def _after_in_float64(ms: MigrationSubject, e: Example) -> bool:
    """Whether the after model's float64 replay runs in float64 throughout. A
    layer that computes in float32 inside it (a fused attention, an explicit
    ``dtype=``) rounds deterministically: the same sign on every example is then
    no evidence of a semantic change (``SIGN_RUN`` does not apply; read once per
    case from the after loss's jaxpr)."""
    if "after:float64" not in ms.memo:
        with compat.enable_x64():
            args = abstract64(ms.convert64(e.params)), abstract64(e.batch)
            ms.memo["after:float64"] = replay_precision(ms.after.loss64, *args).full
    return bool(ms.memo["after:float64"])


def _record(
    ms: MigrationSubject,
    name: str,
    e: Example,
    devs: list[Deviation],
    skipped: Sequence[NotCompared] = (),
) -> None:
    """Records one example's deviations and the leaves it could not compare; fails
    at once past the hard limit or on an integer mismatch (so the example can be
    shrunk), otherwise the verdict waits for all examples. Keeps the example that
    deviates most, for the failure's localisation."""
    if not _after_in_float64(ms, e):
        devs = [d._replace(sign=0) for d in devs]
    ms.evidence.setdefault(name, []).append(devs)
    ms.evidence.setdefault(f"{name}:not compared", []).extend(skipped)
    units = max((d.units for d in devs), default=0.0)
    if name in _LOCALISED and units >= ms.memo.get(f"worst:{name}", (-1.0,))[0]:
        ms.memo[f"worst:{name}"] = (units, e)
    if any(d.units > HARD_UNITS for d in devs):
        with localised(ms, e if name in _LOCALISED else None, "on this example"):
            with_note(ms, _ASSERT[name], [devs], note=not_compared_note(skipped))


def conclude(name: str) -> Any:
    def run(ms: MigrationSubject) -> str | None:
        evidence = ms.evidence.get(name, [])
        if not evidence:
            raise InvariantNotApplicable("no example was compared")
        skipped = not_compared_note(ms.evidence.get(f"{name}:not compared", []))
        worst = ms.memo.get(f"worst:{name}", (0.0, None))[1]
        with localised(ms, worst, "on the example that deviates most"):
            with_note(ms, _ASSERT[name], evidence, note=skipped)
        return "; ".join(n for n in (skipped, stochastic_note(ms)) if n) or None

    run.__name__ = f"conclude_{name}"
    return run


def check_loss_matches_before(ms: MigrationSubject, e: Example) -> None:
    before32 = ms.before.loss_fn(e.params, e.batch)
    with compat.enable_x64():
        p64, b64 = to64(e.params), to64(e.batch)
        before64 = ms.before.loss64(p64, b64)
        after64 = ms.after.loss64(ms.convert64(e.params), b64)
    _record(
        ms,
        "loss_matches_before",
        e,
        [deviation("loss", before64, after64, before32)],
    )
    if ms.stochastic is not None:  # the same comparison, stochastic layers on
        before, after = ms.stochastic
        with compat.enable_x64():
            train64 = before.loss64(p64, b64)
            after_train64 = after.loss64(ms.convert64(e.params), b64)
        # Random draws differ between float32 and float64 (the uniform samples
        # are drawn in the input dtype), so the stochastic model's own float32 run
        # is no measure of rounding: the deterministic model's noise is the unit.
        noise = np.float64(before32) - np.float64(before64)
        train = np.asarray(train64, np.float64)
        dev = deviation("stochastic loss", train, after_train64, train + noise)
        ms.evidence.setdefault("stochastic_loss", []).append([dev])


def check_grads_match_before(ms: MigrationSubject, e: Example) -> None:
    before32 = ms.before.grad_fn(e.params, e.batch)
    with compat.enable_x64():
        p64, b64 = to64(e.params), to64(e.batch)
        before64 = ms.before.grad_fn(p64, b64)
        try:
            after64 = ms.pulled_grad(p64, b64)
        except Exception as exc:  # noqa: BLE001 - a host-side converter
            raise InvariantNotApplicable(
                f"convert is not differentiable by JAX ({type(exc).__name__}): the "
                "after gradient cannot be pulled back to the before params"
            ) from exc
    scale = tree_norm(before64)
    devs = [
        deviation(f"gradient {half}{path}", b64_leaf, a64_leaf, b32_leaf, scale=scale)
        for half in before64
        for (path, b64_leaf), (_, a64_leaf), (_, b32_leaf) in zip(
            leaves(before64[half]),
            leaves(after64[half]),
            leaves(before32[half]),
            strict=True,
        )
    ]
    _record(ms, "grads_match_before", e, devs)


def _run(ms: MigrationSubject, e: Example, steps: int) -> tuple[Any, Any, Any]:
    """``steps`` steps of both models from the example: before in float64 and in
    float32, after (from the converted params) in float64."""
    before32 = e.params
    for _ in range(steps):
        before32 = ms.before.jitted(before32, e.batch, e.lr)
    with compat.enable_x64():
        b64, lr = to64(e.batch), jnp.float64(e.lr)
        before64, after64 = to64(e.params), ms.convert64(e.params)
        for _ in range(steps):
            before64 = ms.before.step64(before64, b64, lr)
            after64 = ms.after.step64(after64, b64, lr)
    return before64, before32, after64


def check_step_matches_before(ms: MigrationSubject, e: Example) -> None:
    before64, before32, after64 = _run(ms, e, 1)
    _record(
        ms,
        "step_matches_before",
        e,
        *update_deviations(ms, e.params, (before64, before32), after64),
    )


def check_trajectory_matches_before(ms: MigrationSubject, e: Example) -> None:
    before64, before32, after64 = _run(ms, e, ms.steps)
    _record(
        ms,
        "trajectory_matches_before",
        e,
        *update_deviations(ms, e.params, (before64, before32), after64),
    )


# This family's rows of the registry (report order).
register(
    Invariant(
        "loss_matches_before",
        "(migration) another loss than the Linen original on the converted weights "
        "(epsilon, activation, transposed kernel, dropped residual, sum for mean), in "
        "float64, in units of the original's float32 noise",
        check_loss_matches_before,
        conclude=conclude("loss_matches_before"),
        kind="migration",
        cost=("convert", "float64"),
        convincing=SIGN_RUN,  # a verdict across examples
    ),
    Invariant(
        "grads_match_before",
        "(migration) the after gradient pulled back through `convert` (chain rule) "
        "differs from the before gradient",
        check_grads_match_before,
        conclude=conclude("grads_match_before"),
        kind="migration",
        cost=("convert", "float64"),
        convincing=SIGN_RUN,  # a verdict across examples
    ),
    Invariant(
        "step_matches_before",
        "(migration) one step moves the converted params or state (BatchNorm "
        "statistics, momentum) differently from the original's step",
        check_step_matches_before,
        conclude=conclude("step_matches_before"),
        kind="migration",
        cost=("convert", "float64"),
        convincing=SIGN_RUN,  # a verdict across examples
    ),
    Invariant(
        "trajectory_matches_before",
        "(migration) `steps` consecutive steps drift apart (state carried between "
        "steps differs)",
        check_trajectory_matches_before,
        conclude=conclude("trajectory_matches_before"),
        kind="migration",
        cost=("convert", "float64"),
        convincing=SIGN_RUN,  # a verdict across examples
    ),
)
