"""The registry of invariants: each name, what it catches, and how it is checked.

Each :class:`Invariant` runs on a :class:`~hybridcheck.subject.Subject` and one
:class:`~hybridcheck.subject.Example`. Invariants judged across examples also have a
``conclude`` step, run once after the search. :func:`hybridcheck.verify`, the pytest
plugin, the property tests and the README's table all read this one table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from hybridcheck.checks import (
    check_all_finite,
    check_deterministic,
    check_grads_match_finite_differences,
    check_grads_match_params,
    check_inputs_unchanged,
    check_jit_matches_eager,
    check_loss_decrease_first_order,
    check_retrace_budget,
    check_sgd_update,
    check_sharded_matches_single_device,
    check_update_changes_exactly_graded_leaves,
    check_update_is_descent,
    conclude_every_half_gets_gradient,
    gather_grads,
)
from hybridcheck.checks_migration import (
    check_convert_covers_every_param,
    check_grads_match_before,
    check_loss_matches_before,
    check_roundtrip,
    check_sharding_matches_before,
    check_step_matches_before,
    check_trajectory_matches_before,
    conclude,
)
from hybridcheck.checks_training import (
    check_every_trainable_is_trained,
    check_randomness_is_used,
    check_state_is_threaded,
    check_update_matches_tx,
    conclude_randomness_is_used,
)
from hybridcheck.invariants import migration as mig
from hybridcheck.subject import TRAJECTORY_STEPS

__all__ = [
    "COSTS",
    "EXPENSIVE",
    "Invariant",
    "REGISTRY",
    "cost_text",
    "static_not_applicable",
]


COSTS: dict[str, str] = {
    "step": "the jitted step (once per example, shared by every invariant)",
    "grad": "the jitted gradient (once per example, shared)",
    "trajectory": f"{TRAJECTORY_STEPS} consecutive jitted steps and gradients (shared)",
    "reduce": "per-leaf summaries reduced on the device (a pass over the params)",
    "host": "the inputs copied to the host (a pass over the params)",
    "convert": "the migration's converter (and its inverse)",
    "eager": "the step op by op under `jax.disable_jit` (several jitted steps)",
    "float64": "float64 replays of loss, gradient or step (compiled once per shape)",
    "mesh": "a run on a mesh of forced host devices",
}
"""The units of ``Invariant.cost``: what an invariant spends per example."""
EXPENSIVE = frozenset({"eager", "float64", "mesh"})
"""Units that cost several train steps each: invariants that need one are sampled."""


@dataclasses.dataclass(frozen=True)
class Invariant:
    """One invariant of the registry.

    Attributes:
      name: ``<name>`` of ``assert_<name>``, the report line and the README row.
      catches: one line (Markdown) saying what a failure means.
      check: ``check(subject, example)``: raises ``AssertionError`` on a failure,
        :class:`InvariantNotApplicable` outside its precondition.
      conclude: ``conclude(subject)`` for a verdict across all examples, run once
        after the search (``check`` then only gathers evidence); a string it
        returns is a note for the report (how a held invariant was compared).
      needs_sgd: applies only to plain SGD steps.
      needs_devices: applies only with two or more devices.
      needs_field: applies only to cases that set this HybridCase field.
      kind: ``"step"`` (a HybridCase's step) or ``"migration"`` (a MigrationCase).
      cost: what it needs per example, in the units of :data:`COSTS`. One with an
        :data:`EXPENSIVE` unit is *sampled*: it runs on the first example of every
        shape bucket, then on ``max(Profile.sample, convincing)`` examples in all;
        the others run on every example.
      convincing: the fewest examples a sampled invariant needs for its verdict:
        1 where the bug it exists for shows on any example; more where the verdict
        is taken across examples.
    """

    name: str
    catches: str
    check: Callable[[Any, Any], None]
    conclude: Callable[[Any], str | None] | None = None
    needs_sgd: bool = False
    needs_devices: bool = False
    needs_field: str = ""
    kind: str = "step"
    cost: tuple[str, ...] = ("step", "grad", "reduce")
    convincing: int = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.cost) - set(COSTS))
        if unknown:
            raise ValueError(
                f"Invariant({self.name!r}).cost names unknown units {unknown}; the "
                f"units are {list(COSTS)}"
            )
        if not isinstance(self.convincing, int) or self.convincing < 1:
            raise ValueError(
                f"Invariant({self.name!r}).convincing must be an int >= 1, got "
                f"{self.convincing!r}"
            )

    @property
    def sampled(self) -> bool:
        """Whether it runs on a sample of the examples (see ``cost``)."""
        return bool(EXPENSIVE & set(self.cost))


_INVARIANTS = [
    Invariant(
        "grads_match_params",
        "gradient / new params with another structure, shape or dtype than the params",
        check_grads_match_params,
        cost=("step", "grad"),
    ),
    Invariant(
        "update_changes_exactly_graded_leaves",
        "a half or leaf with a gradient that the step leaves unchanged (default "
        "argnums, a half not updated, a closure, a stop_gradient); a leaf moved "
        "without gradient",
        check_update_changes_exactly_graded_leaves,
        cost=("step", "grad", "reduce"),
    ),
    Invariant(
        "every_half_gets_gradient",
        "across all examples, a half or leaf whose gradient is always zero (a loss "
        "that closes over one half)",
        gather_grads,
        conclude=conclude_every_half_gets_gradient,
        cost=("trajectory",),
    ),
    Invariant(
        "every_trainable_is_trained",
        "along a few consecutive steps, a trainable leaf (nnx.Param or subclass such "
        "as LoRAParam, Linen `params`) with a gradient that the step does not update "
        "(left out of the optimizer's `wrt` or of the differentiated arguments)",
        check_every_trainable_is_trained,
        cost=("trajectory", "reduce"),
    ),
    Invariant(
        "loss_decrease_first_order",
        "`(L0 - L(lr)) / (lr·‖g‖²) → 1` as lr → 0, in float64: one half updated "
        "(ratio `‖g_half‖²/‖g‖²`), wrong step size, sign errors",
        check_loss_decrease_first_order,
        needs_sgd=True,
        cost=("float64",),
    ),
    Invariant(
        "update_is_descent",
        "per half `<new - old, -g> > 0` (holds for SGD, momentum, Adam's first "
        "step): a sign error on one half",
        check_update_is_descent,
        cost=("step", "grad", "reduce"),
    ),
    Invariant(
        "sgd_update",
        "for SGD steps, `new == old - lr·g` to 16 ulp, leaf by leaf",
        check_sgd_update,
        needs_sgd=True,
        cost=("step", "grad", "reduce"),
    ),
    Invariant(
        "update_matches_tx",
        "where the case names its optax `tx`: a few consecutive steps differ from "
        "`tx` applied to the gradients with its state threaded (a hyperparameter "
        "changed, state re-initialised each step, a schedule that does not advance)",
        check_update_matches_tx,
        needs_field="tx",
        cost=("float64",),
    ),
    Invariant(
        "state_is_threaded",
        "state the training forward pass updates (BatchNorm statistics) returned "
        "stale, moved by the optimizer, or taken from another pass",
        check_state_is_threaded,
        needs_field="state_fn",
        cost=("step",),
    ),
    Invariant(
        "randomness_is_used",
        "across examples, a stochastic model whose loss ignores its key (Dropout left "
        "in eval mode, a constant key) or whose step returns its RNG state unadvanced",
        check_randomness_is_used,
        conclude=conclude_randomness_is_used,
        needs_field="reseed",
        cost=("step",),
    ),
    Invariant(
        "jit_matches_eager",
        "Python-side state baked in at trace time (n/a on ill-conditioned examples, "
        "see below)",
        check_jit_matches_eager,
        cost=("eager", "float64"),
    ),
    Invariant(
        "grads_match_finite_differences",
        "wrong custom VJPs, partial stop_gradient (float64 reverse-mode directional "
        "derivatives along fixed ±1 directions vs central differences, per half)",
        check_grads_match_finite_differences,
        cost=("float64",),
    ),
    Invariant(
        "deterministic",
        "host randomness, state carried between calls",
        check_deterministic,
        cost=("step", "eager"),
    ),
    Invariant(
        "all_finite",
        "NaN/Inf after one step on finite input",
        check_all_finite,
        cost=("step",),
    ),
    Invariant(
        "inputs_unchanged",
        "mutated or donated inputs",
        check_inputs_unchanged,
        cost=("host", "eager"),
    ),
    Invariant(
        "retrace_budget",
        "more traces than distinct input shapes (lr or seed baked in as constants)",
        check_retrace_budget,
        cost=("step",),
    ),
    Invariant(
        "sharded_matches_single_device",
        "data-parallel over forced host devices ≠ one device",
        check_sharded_matches_single_device,
        needs_devices=True,
        cost=("mesh", "float64"),
    ),
    Invariant(
        "convert_covers_every_param",
        "(migration) a before param the converter drops (a bias discarded, a slice "
        "lost) or an after param it never fills; element by element, through "
        "`jax.vjp`/`jax.jvp` of `convert`",
        check_convert_covers_every_param,
        kind="migration",
        cost=("convert", "float64"),
    ),
    Invariant(
        "loss_matches_before",
        "(migration) another loss than the Linen original on the converted weights "
        "(epsilon, activation, transposed kernel, dropped residual, sum for mean), in "
        "float64, in units of the original's float32 noise",
        check_loss_matches_before,
        conclude=conclude("loss_matches_before"),
        kind="migration",
        cost=("convert", "float64"),
        convincing=mig.SIGN_RUN,  # a verdict across examples
    ),
    Invariant(
        "grads_match_before",
        "(migration) the after gradient pulled back through `convert` (chain rule) "
        "differs from the before gradient",
        check_grads_match_before,
        conclude=conclude("grads_match_before"),
        kind="migration",
        cost=("convert", "float64"),
        convincing=mig.SIGN_RUN,  # a verdict across examples
    ),
    Invariant(
        "step_matches_before",
        "(migration) one step moves the converted params or state (BatchNorm "
        "statistics, momentum) differently from the original's step",
        check_step_matches_before,
        conclude=conclude("step_matches_before"),
        kind="migration",
        cost=("convert", "float64"),
        convincing=mig.SIGN_RUN,  # a verdict across examples
    ),
    Invariant(
        "trajectory_matches_before",
        "(migration) `steps` consecutive steps drift apart (state carried between "
        "steps differs)",
        check_trajectory_matches_before,
        conclude=conclude("trajectory_matches_before"),
        kind="migration",
        cost=("convert", "float64"),
        convincing=mig.SIGN_RUN,  # a verdict across examples
    ),
    Invariant(
        "roundtrip",
        "(migration) `invert(convert(p)) != p` bitwise, where the case gives `invert`",
        check_roundtrip,
        needs_field="invert",
        kind="migration",
        cost=("convert",),
    ),
    Invariant(
        "sharding_matches_before",
        "(migration) a converted param that loses or changes its source's "
        "partitioning (`nn.with_partitioning` / logical names through `axis_rules` "
        "vs NNX sharding metadata, traced element by element through `convert`), or "
        "a step on a mesh of forced host devices ≠ the unsharded step (float64)",
        check_sharding_matches_before,
        needs_devices=True,
        kind="migration",
        cost=("convert", "mesh", "float64"),
    ),
]

REGISTRY: dict[str, Invariant] = {inv.name: inv for inv in _INVARIANTS}
"""Every built-in invariant by name, in report order."""


def cost_text(inv: Invariant) -> str:
    """The README's cost cell: the units it spends per example, and its sample."""
    text = ", ".join(f"`{unit}`" for unit in inv.cost)
    if inv.sampled:
        at_least = f", >= {inv.convincing} examples" if inv.convincing > 1 else ""
        text += f" (sampled{at_least})"
    return text


def static_not_applicable(inv: Invariant, subject: Any) -> str | None:
    """Why ``inv`` cannot apply to ``subject`` at all (None if it may)."""
    if inv.needs_sgd and not subject.sgd:
        return "the step is not plain SGD (HybridCase.sgd is False)"
    if inv.needs_field and getattr(subject, inv.needs_field) is None:
        owner = "MigrationCase" if inv.kind == "migration" else "HybridCase"
        return (
            f"the case does not set {owner}.{inv.needs_field} (see the README's "
            "invariant table)"
        )
    if inv.needs_devices and len(jax.devices()) < 2:
        return (
            f"only {len(jax.devices())} device; run with XLA_FLAGS="
            "--xla_force_host_platform_device_count=4 (nox -s multidevice)"
        )
    return None
