"""How far a migrated model is from the model before it, in float64, in units of
the before model's own float32 rounding noise; the verdict across examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from hybridcheck.describe.migration_case import MigrationSubject
from hybridcheck.describe.trees import (
    fail,
    leaves,
)

__all__ = [
    "DETERMINISTIC",
    "stochastic_note",
    "with_note",
    "EXACT_RTOL",
    "HARD_UNITS",
    "INTEGER_HINT",
    "SYSTEMATIC_SHARE",
    "MIN_EXAMPLES",
    "SIGN_RUN",
    "Deviation",
    "deviation",
    "tree_norm",
    "assert_matches_before",
    "units_summary",
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


INTEGER_HINT = (
    "Integer leaves (step counters) that both steps advance are compared exactly: "
    "the migrated step counts differently (a step counted per micro-batch, a "
    "counter reset or advanced twice), which moves any schedule that reads it."
)


SIGN_RUN = 8
"""Rounding has no preferred sign: this many non-exact examples that all deviate in
the same direction (chance 2**-7) is a systematic change."""


class Deviation(NamedTuple):
    """One example's deviation of the after model from the before model.

    Attributes:
      what: the quantity (``"loss"``, ``"gradient ['linen']['kernel']"``, ...).
      rel64: relative float64 deviation ``|after - before| / |before|``.
      units: that deviation in units of the before model's float32 noise.
      sign: the sign of the (largest component of the) deviation; 0 where it
        carries no evidence (the after replay rounds deterministically in float32).
      exact: for an integer leaf (a step counter), compared exactly: both values
        in its own terms (``rel64`` and ``units`` are then ``inf``); ``""`` for a
        floating quantity.
    """

    what: str
    rel64: float
    units: float
    sign: int
    exact: str = ""


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
    problems, counters = [], []
    for what, ds in by_what.items():
        exact = [d for d in ds if d.exact]
        if exact:  # an integer leaf: its own values, no float32 noise units
            counters.append(
                f"{what}: integer leaf, compared exactly: {exact[0].exact} "
                f"({len(exact)} of {len(ds)} examples differ)"
            )
            continue
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
    hints = ([hint] if problems else []) + ([INTEGER_HINT] if counters else [])
    fail(invariant, problems + counters, " ".join(hints))


def units_summary(deviations: Sequence[Deviation]) -> str:
    """``"max 1.2x, median 0.4x float32 noise"`` for a report line."""
    units = sorted(d.units for d in deviations)
    if not units:
        return "no deviation measured"
    median = units[len(units) // 2]
    return f"max {units[-1]:.3g}x, median {median:.3g}x float32 noise" + (
        "" if math.isfinite(units[-1]) else " (non-finite)"
    )


DETERMINISTIC = (
    "compared with the stochastic layers off (MigrationCase.before_eval / after_eval)"
)


def with_note(ms: MigrationSubject, check: Any, *args: Any, note: str = "") -> None:
    """Runs an assertion; its failure says when the comparison was deterministic,
    and ``note`` (the leaves not compared)."""
    try:
        check(*args)
    except AssertionError as exc:
        notes = [n for n in (note, ms.stochastic and DETERMINISTIC) if n]
        if not notes:
            raise
        raise AssertionError(f"{exc}" + "".join(f"\n  ({n})" for n in notes)) from None


def stochastic_note(ms: MigrationSubject) -> str:
    """What the report says when the comparison was made deterministic: whether
    the two models, stochastic layers on, agreed as well."""
    if ms.stochastic is None:
        return ""
    evidence = ms.evidence.get("stochastic_loss", [])
    worst = max((d.units for ex in evidence for d in ex), default=0.0)
    try:
        assert_matches_before("loss_matches_before", evidence, hint="")
    except AssertionError:
        return (
            f"{DETERMINISTIC}: with them on, the two losses differ (worst {worst:.3g}x "
            "float32 noise): the models consume the random key differently, which "
            "alone is no bug (loss_distribution_matches_before compares them over "
            "many keys)"
        )
    return f"{DETERMINISTIC}; with them on, the two models agree as well"
