"""Reverse-mode gradients against central finite differences, in float64 (or in the
precision the replay actually ran in)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hybridcheck import compat
from hybridcheck.describe.subject import TRAJECTORY_STEPS, Example, Subject, to64
from hybridcheck.describe.trees import InvariantNotApplicable, fail, split_halves
from hybridcheck.invariants._fd_slopes import (
    FD_NUDGE,
    FD_SEED,
    autodiff_slopes,
    central_slopes,
    loss_of_half,
    nearby,
    slope_along,
)
from hybridcheck.invariants._precision import (
    Precision,
    precision_note,
    replay_precision,
    rounding_noise,
)
from hybridcheck.invariants.registry import Invariant, register

__all__ = ["FD_STEPS", "FD_LOW_STEPS", "FD_TOL", "FD_NUDGE", "FD_SEED"]
__all__ += ["FD_NOISE_UNITS", "FD_NOISE_SHARE", "assert_grads_match_finite_differences"]

FD_STEPS: tuple[float, ...] = (1e-4, 1e-5, 1e-6, 1e-3)
"""Finite-difference steps tried in turn: where truncation and rounding error balance
depends on the curvature, so one fixed step fails smooth-but-curved models."""

FD_LOW_STEPS: tuple[float, ...] = (1e-3, 3e-3, 3e-4, 1e-2, 1e-4, 3e-5, 1e-5)
"""The steps where the replay ran in less than float64: rounding noise over ``eps``
calls for larger steps (the cube root of the precision's epsilon is float32's
optimum, about 5e-3); those that the noise drowns are skipped."""

FD_TOL = 1e-3
"""Relative and absolute tolerance of the float64 finite-difference comparison."""

FD_NOISE_UNITS = 4.0
"""In less than float64, autodiff and finite differences may also differ by this many
times the loss's measured rounding noise over the step (``noise / eps``)."""

FD_NOISE_SHARE = 0.25
"""A step whose noise allowance exceeds this share of the slopes compared cannot
tell a wrong gradient from rounding: it is skipped."""


@dataclasses.dataclass
class _Verdict:
    agreed: bool = False
    why: str = ""  # the first resolvable disagreement ("" if none)


def assert_grads_match_finite_differences(
    loss: Callable[..., Any],
    params: Any,
    args: tuple[Any, ...] = (),
    *,
    halves: Sequence[str] | None = None,
    eps: Sequence[float] | None = None,
    tol: float = FD_TOL,
    precision: Precision | None = None,
) -> None:
    """Autodiff gradients equal central finite differences, half by half.

    For each half, the reverse-mode directional derivative ``<grad, v>`` along a
    fixed random +-1 direction ``v`` over that half's floating leaves is compared
    with ``(loss(p + eps v) - loss(p - eps v)) / (2 eps)`` to ``tol`` (absolute and
    relative), as ``jax.test_util.check_grads(order=1, modes=("rev",))`` does, but
    with one reverse pass for all halves and two loss evaluations per half, each
    compiled once per shape. Call it under ``compat.enable_x64()`` with float64
    params: float32 finite differences are too coarse to mean anything.

    Precision: the loss's jaxpr says which precision it actually runs in (a layer
    with ``dtype=jnp.float32`` computes in float32 whatever its inputs). Where that
    is less than float64, each half's rounding noise is measured on the example
    (the loss moved by one rounding step of every entry of the half), the steps are
    ``FD_LOW_STEPS``, a step may disagree by ``FD_NOISE_UNITS`` times that noise over
    ``eps`` more, and a step whose allowance exceeds ``FD_NOISE_SHARE`` of the slopes
    is skipped. The message says which precision it judged in.

    Kinks: a central difference is the mean of the slope over ``[-eps, eps]``, so
    where it disagrees with the slope at the point it is compared with the slopes
    at the step's ends too: inside their range (a ReLU crossing its kink within
    the step, a BatchNorm's curvature) it is consistent with autodiff and that
    step says nothing. Where no step agrees (a ReLU input at exactly 0 for every
    step), the half is re-checked at a nearby point: the half moved by
    ``FD_NUDGE`` of each entry and the batch by ``FD_NUDGE`` of its largest
    entry. Only a disagreement at both points is a failure: a wrong gradient (a
    factor, a sign, a dropped term) is wrong at both.

    Args:
      loss: ``loss(params, *args) -> scalar``, params by half. Keep the same
        function object between calls: it is a static argument of the compiled
        probes.
      params: the model's params by half.
      args: further arguments of ``loss`` (a batch), traced.
      halves: labels of the halves to check (default: every half).
      eps: the steps (default ``FD_STEPS``, or ``FD_LOW_STEPS`` in less than
        float64).
      precision: the precision the loss runs in (default: read from its jaxpr).

    Raises:
      InvariantNotApplicable: where, at both points, every step that does not agree
        is drowned by rounding noise (a bfloat16 model on a flat example) or has a
        kink within reach.
    """
    all_halves = split_halves(params, min_halves=1)
    labels = tuple(all_halves) if halves is None else tuple(halves)
    unknown = [label for label in labels if label not in all_halves]
    if unknown or not labels:
        raise ValueError(
            f"halves must name halves of params {list(all_halves)}, got {list(labels)}"
        )
    args = tuple(args)
    if precision is None:
        precision = replay_precision(loss, params, *args)
    if eps is None:
        eps = FD_STEPS if precision.full else FD_LOW_STEPS
    if not eps or any(not (step > 0) for step in eps):
        raise ValueError(f"eps must be positive steps, got {list(eps)}")
    judge = _Judge(loss, labels, eps, tol, precision)
    first = judge(params, args, labels)
    pending = [label for label in labels if not first[label].agreed]
    second = {}
    if pending:
        near_params, near_args = nearby(params, pending, args)
        second = judge(near_params, near_args, pending)
    unresolved = [label for label in pending if not second[label].agreed]
    failing = [label for label in unresolved if first[label].why and second[label].why]
    unresolved = [label for label in unresolved if label not in failing]
    judged = f"judged in {precision.describe()}"
    fail(
        "grads_match_finite_differences",
        [
            f"half '{label}': autodiff disagrees with finite differences (eps in "
            f"{list(eps)}, tol={tol:g}) at the example and at a nearby point "
            f"({judged}): {first[label].why}"
            for label in failing
        ],
        "The gradient of that half is wrong: a custom_vjp/custom_jvp with a bug, a "
        "stop_gradient on part of the path, or a forward that is not the function "
        "being differentiated.",
    )
    if unresolved:  # neither agrees nor disagrees beyond rounding at both points
        raise InvariantNotApplicable(
            f"finite differences cannot judge half(s) {unresolved} here ({judged}): "
            "at the example and at a nearby point, every step where the two do not "
            "agree is drowned by rounding noise or has a kink within reach (the "
            "central difference lies between the autodiff slopes at the step's ends)"
        )


@dataclasses.dataclass
class _Judge:
    """Compares autodiff with finite differences at one point, step by step."""

    loss: Callable[..., Any]
    labels: tuple[str, ...]
    eps: Sequence[float]
    tol: float
    precision: Precision

    def __call__(
        self, params: Any, args: tuple[Any, ...], check: Sequence[str]
    ) -> dict[str, _Verdict]:
        exact = np.asarray(autodiff_slopes(self.loss, self.labels, params, args))
        noise = {label: self._noise(params, args, label) for label in check}
        verdicts = {label: _Verdict() for label in check}
        for step in self.eps:
            pending = [label for label in check if not verdicts[label].agreed]
            if not pending:
                break
            central = np.asarray(
                central_slopes(self.loss, self.labels, params, args, step)
            )
            for label in pending:
                i = self.labels.index(label)
                a, c, verdict = float(exact[i]), float(central[i]), verdicts[label]
                allowance = FD_NOISE_UNITS * noise[label] / step
                if allowance > FD_NOISE_SHARE * (self.tol + max(abs(a), abs(c))):
                    continue  # rounding drowns this step
                slack = self.tol + self.tol * abs(c) + allowance
                if abs(a - c) <= slack:
                    verdict.agreed = True
                    continue
                lo, hi = self._along(params, args, label, step, a)
                if lo - slack <= c <= hi + slack:
                    continue  # a kink or curvature within reach of this step
                if not verdict.why:
                    verdict.why = self._why(a, c, step, noise[label], (lo, hi))
        return verdicts

    def _along(
        self, params: Any, args: tuple[Any, ...], label: str, step: float, a: float
    ) -> tuple[float, float]:
        """The range of the autodiff slope at the step's ends and middle: by the
        mean value theorem, central differences over the step equal the slope
        somewhere between its ends. A central difference inside that range is
        consistent with autodiff (a ReLU crossing its kink, a BatchNorm's curvature
        within reach), one outside it is not."""
        ends = [
            float(slope_along(self.loss, self.labels, label, params, args, t))
            for t in (-step, step)
        ]
        return min(a, *ends), max(a, *ends)

    def _noise(self, params: Any, args: tuple[Any, ...], label: str) -> float:
        if self.precision.full:
            return 0.0
        half = split_halves(params, min_halves=1)[label]
        return rounding_noise(
            lambda h: loss_of_half(self.loss, label, params, h, args),
            half,
            self.precision,
        )

    def _why(
        self, a: float, c: float, step: float, noise: float, along: tuple[float, float]
    ) -> str:
        text = (
            f"directional derivative {a:.8g} by autodiff ({along[0]:.6g} to "
            f"{along[1]:.6g} along the step) vs {c:.8g} by central differences "
            f"(eps={step:g})"
        )
        if noise > 0:
            units = abs(a - c) / (noise / step)
            text += (
                f", {units:.3g}x the {self.precision.name} rounding noise of the "
                f"loss over eps ({noise / step:.3g})"
            )
        return text


_EVIDENCE = "grads_match_finite_differences:precision"
_GATED = "grads_match_finite_differences:gated"


def _check_at(s: Subject, params: Any, batch: Any, halves: list[str]) -> Precision:
    with compat.enable_x64():
        params, batch = to64(params), to64(batch)
        # s.loss is one object for the case's life: the probes compile once
        precision = replay_precision(s.loss, params, batch)
        assert_grads_match_finite_differences(
            s.loss, params, (batch,), halves=halves, precision=precision
        )
    return precision


def check_grads_match_finite_differences(s: Subject, e: Example) -> None:
    halves = list(s.trainable(e.params))
    try:
        precision = _check_at(s, *s.example64(e), halves)
    except AssertionError as at_start:
        # A gradient gated by the step count (a probe warmup's stop_gradient) is
        # judged where the case's own steps open the gate; a wrong VJP or an
        # ungated stop_gradient disagrees there too.
        try:
            precision = _check_at(s, s.trajectory(e)[0][-1], e.batch, halves)
        except AssertionError:
            raise at_start from None
        s.evidence.setdefault(_GATED, []).append(TRAJECTORY_STEPS)
    s.evidence.setdefault(_EVIDENCE, []).append(precision)  # held here


def conclude_grads_match_finite_differences(s: Subject) -> str | None:
    notes = [precision_note(s.evidence.get(_EVIDENCE, []))]
    gated = s.evidence.get(_GATED, [])
    if gated:
        notes.append(
            f"on {len(gated)} example(s) autodiff and finite differences disagreed "
            f"at the example and agreed after {max(gated)} of the case's own steps: "
            "a gradient gated by the step count (a probe warmup's stop_gradient), "
            "judged where the gate is open"
        )
    return "; ".join(n for n in notes if n) or None


# This family's rows of the registry (report order).
register(
    Invariant(
        "grads_match_finite_differences",
        "wrong custom VJPs, partial stop_gradient (float64 reverse-mode directional "
        "derivatives along fixed ±1 directions vs central differences, per half; in "
        "the precision that ran and its noise units where layers compute in less, "
        "re-checked nearby at a kink and after the case's own steps where a gate "
        "closes the gradient at first)",
        check_grads_match_finite_differences,
        conclude=conclude_grads_match_finite_differences,
        cost=("float64",),
    ),
)
