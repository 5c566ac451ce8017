"""Invariants comparing a migrated model with the model before the migration.

Deviations are measured in float64, where the same math in another order agrees to
~1e-12, and expressed in units of the *before* model's own float32 rounding noise on
the same example (before in float32 vs before in float64). An exact migration whose
new layers refuse float64 internally (the fused attention softmax runs in float32
even under x64) deviates by about that noise, with a sign that varies from example
to example; a semantic change (an epsilon, an activation, a transposed kernel)
deviates systematically. So the verdict is taken across examples, not per threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from hybridcheck._typing import PyTree
from hybridcheck.invariants._tree import fail, leaves

__all__ = [
    "HINTS",
    "assert_loss_matches_before",
    "assert_grads_match_before",
    "assert_step_matches_before",
    "assert_trajectory_matches_before",
    "Deviation",
    "EXACT_RTOL",
    "HARD_UNITS",
    "SYSTEMATIC_SHARE",
    "SIGN_RUN",
    "deviation",
    "tree_norm",
    "assert_convert_covers_every_param",
    "assert_matches_before",
    "assert_roundtrip",
]

EXACT_RTOL = 1e-10
"""Relative float64 deviation below which two results are the same math: float64
reorderings agree to ~1e-15, so 1e-10 leaves five orders for accumulation."""
HARD_UNITS = 16.0
"""A deviation 16x the before model's whole float32 noise cannot be float32 rounding
of a subset of the after model's ops: one such example fails the invariant."""
SYSTEMATIC_SHARE = 2 / 3
"""Rounding of a subset of the ops exceeds the whole model's float32 noise on some
examples, not on most: over this share of (at least ``MIN_EXAMPLES``) examples is a
systematic change."""
MIN_EXAMPLES = 5
SIGN_RUN = 8
"""Rounding has no preferred sign: this many non-exact examples that all deviate in
the same direction (chance 2**-7) is a systematic change."""


class Deviation(NamedTuple):
    """One example's deviation of the after model from the before model.

    Attributes:
      what: the quantity (``"loss"``, ``"gradient ['linen']['kernel']"``, ...).
      rel64: relative float64 deviation ``|after - before| / |before|``.
      units: that deviation in units of the before model's float32 noise.
      sign: the sign of the (first component of the) deviation, for scalars.
    """

    what: str
    rel64: float
    units: float
    sign: int


def _norm(x: Any) -> float:
    return float(np.sqrt(np.sum(np.square(np.asarray(x, np.float64)))))


def deviation(
    what: str, before64: Any, after64: Any, before32: Any, *, scale: float = 0.0
) -> Deviation:
    """The deviation of ``after64`` from ``before64``, in units of float32 noise.

    Args:
      what: names the quantity in the report.
      before64, after64: the quantity from each model, in float64.
      before32: the before model's quantity in float32 (its rounding noise).
      scale: the magnitude of the whole quantity this is a part of (a gradient's
        norm over all leaves). A leaf that is zero by cancellation (the key kernel's
        gradient over identical tokens) carries rounding noise of the size of the
        terms that cancel, not of its own size: deviations and noise are measured
        against the larger of the two.

    The noise is ``|before32 - before64|`` floored at one float32 rounding of that
    scale, so that an example whose float32 noise happens to cancel does not make
    any deviation look huge.
    """
    b64 = np.asarray(before64, np.float64)
    a64 = np.asarray(after64, np.float64)
    b32 = np.asarray(before32, np.float64)
    size = max(_norm(b64), float(scale), np.finfo(np.float64).tiny)
    diff = _norm(a64 - b64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        rel = float(np.float64(diff) / np.float64(size))
    if rel <= EXACT_RTOL:
        return Deviation(what, rel, 0.0, 0)
    noise = max(_norm(b32 - b64), float(np.finfo(np.float32).eps) * size)
    flat = (a64 - b64).ravel()
    sign = int(np.sign(flat[np.argmax(np.abs(flat))])) if flat.size else 0
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        units = float(np.float64(diff) / np.float64(noise))
    return Deviation(what, rel, units if np.isfinite(units) else np.inf, sign)


def tree_norm(tree: Any) -> float:
    """The norm over every floating leaf of ``tree`` (the ``scale`` of its parts)."""
    return float(
        np.sqrt(
            sum(
                _norm(x) ** 2
                for _, x in leaves(tree)
                if np.issubdtype(np.asarray(x).dtype, np.inexact)
            )
        )
    )


def assert_matches_before(
    invariant: str, deviations: Sequence[Sequence[Deviation]], *, hint: str
) -> None:
    """Across examples, the after model's deviations are rounding, not semantics.

    Args:
      invariant: the invariant's name (``loss_matches_before``, ...).
      deviations: per example, the deviations of each compared quantity.
      hint: what a failure usually means.

    Fails if one deviation exceeds ``HARD_UNITS``; or, for one quantity, more than
    ``SYSTEMATIC_SHARE`` of its non-exact deviations exceed 1 unit (over at least
    ``MIN_EXAMPLES`` examples); or ``SIGN_RUN`` or more non-exact deviations of a
    scalar quantity all have the same sign.
    """
    by_what: dict[str, list[Deviation]] = {}
    for example in deviations:
        for d in example:
            by_what.setdefault(d.what, []).append(d)
    problems = []
    for what, ds in by_what.items():
        worst = max(ds, key=lambda d: d.units)
        inexact = [d for d in ds if d.units > 0]
        over = [d for d in inexact if d.units > 1.0]
        signs = {d.sign for d in inexact}
        detail = (
            f"worst {worst.units:.3g}x float32 noise (float64 relative deviation "
            f"{worst.rel64:.3g}); {len(over)} of {len(ds)} examples above 1x"
        )
        if worst.units > HARD_UNITS:
            problems.append(f"{what}: {detail}, over the {HARD_UNITS:g}x limit")
        elif len(ds) >= MIN_EXAMPLES and len(over) > SYSTEMATIC_SHARE * len(ds):
            problems.append(f"{what}: {detail}: a systematic deviation")
        elif len(inexact) >= SIGN_RUN and len(signs) == 1 and 0 not in signs:
            problems.append(
                f"{what}: all {len(inexact)} deviating examples deviate in the same "
                f"direction ({'+' if signs == {1} else '-'}): a systematic deviation "
                f"({detail})"
            )
    fail(invariant, problems, hint)


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


def assert_convert_covers_every_param(
    before_reach: PyTree, after_source: PyTree
) -> None:
    """Every before element reaches the after params; every after element has a source.

    Args:
      before_reach: the before params' structure with boolean leaves: which elements
        influence some after element.
      after_source: the after params' structure with boolean leaves: which elements
        are influenced by some before element.
    """
    problems = []
    for side, tree, verb in (
        ("before", before_reach, "reach no after param"),
        ("after", after_source, "come from no before param"),
    ):
        for path, leaf in leaves(tree):
            mask = np.asarray(leaf, bool)
            missing = int(mask.size - np.count_nonzero(mask))
            if missing:
                problems.append(
                    f"{side} leaf {path}: {missing} of {mask.size} elements {verb}"
                )
    fail(
        "convert_covers_every_param",
        problems,
        "The checkpoint converter drops a parameter (a bias discarded, a slice of a "
        "fused kernel lost) or the after model has parameters the converter never "
        "fills (left at their fresh initialisation).",
    )


def assert_roundtrip(params: PyTree, back: PyTree) -> None:
    """``invert(convert(params)) == params``, bitwise, leaf by leaf."""
    problems = []
    got = dict(leaves(back))
    for path, leaf in leaves(params):
        if path not in got:
            problems.append(f"leaf {path}: missing after the round trip")
            continue
        a, b = np.asarray(leaf), np.asarray(got[path])
        if a.shape != b.shape or a.dtype != b.dtype:
            problems.append(
                f"leaf {path}: {a.dtype}{list(a.shape)} came back as "
                f"{b.dtype}{list(b.shape)}"
            )
        elif not np.array_equal(a, b):
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
            problems.append(f"leaf {path}: values changed (max |diff| {diff:.3g})")
    extra = set(got) - {p for p, _ in leaves(params)}
    if extra:
        problems.append(f"leaves {sorted(extra)} appeared in the round trip")
    fail(
        "roundtrip",
        problems,
        "invert(convert(p)) must give p back exactly: the converters disagree on a "
        "layout (a transpose or a head split applied one way only) or lose precision.",
    )


def units_summary(deviations: Sequence[Deviation]) -> str:
    """``"max 1.2x, median 0.4x float32 noise"`` for a report line."""
    units = sorted(d.units for d in deviations)
    if not units:
        return "no deviation measured"
    median = units[len(units) // 2]
    return f"max {units[-1]:.3g}x, median {median:.3g}x float32 noise" + (
        "" if math.isfinite(units[-1]) else " (non-finite)"
    )
