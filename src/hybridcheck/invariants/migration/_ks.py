"""The exact two-sample Kolmogorov-Smirnov test of equal sample sizes, with a
tolerance below which two values count as equal.

For two independent samples of size ``n`` from one continuous distribution, the
null distribution of ``D = max_t |F_b(t) - F_a(t)|`` is known exactly (Gnedenko and
Korolyuk, 1951): no simulation, no asymptotics. With ties (a discrete distribution)
the exact p-value is conservative. The statistic used here is Levy's:
``max_t (F_b(t) - F_a(t + tol))`` over both directions, never larger than ``D``; a
perturbation of every value by at most ``tol`` (rounding of the same draw) cannot
raise it above the unperturbed ``D``, so the p-value stays exact or conservative.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["LossSample", "ks_pvalue", "ks_statistic", "loss_sample"]


def ks_statistic(before: Any, after: Any, tol: float = 0.0) -> int:
    """``n`` times the two-sample Kolmogorov-Smirnov distance, values within ``tol``
    counting as equal: ``max_t |F_b(t) - F_a(t + tol)|`` over both directions.

    Args:
      before, after: two samples of the same size ``n`` (NaN counts as ``+inf``).
      tol: values closer than this are not told apart (``>= 0``).

    Raises:
      ValueError: samples of different sizes, empty, or a negative ``tol``.
    """
    b, a = (np.sort(np.nan_to_num(np.ravel(x), nan=np.inf)) for x in (before, after))
    if b.size != a.size or b.size == 0:
        raise ValueError(
            f"ks_statistic: before and after must be non-empty samples of one size, "
            f"got {b.size} and {a.size}"
        )
    if not tol >= 0:
        raise ValueError(f"ks_statistic: tol must be >= 0, got {tol!r}")
    n = b.size
    # F_b(t) - F_a(t + tol) is largest at t = some b value, and symmetrically.
    over = np.arange(1, n + 1) - np.searchsorted(a, b + tol, side="right")
    under = np.arange(1, n + 1) - np.searchsorted(b, a + tol, side="right")
    return int(max(0, over.max(), under.max()))


def ks_pvalue(n: int, k: int) -> float:
    """The exact ``P(D >= k / n)`` of two independent samples of size ``n`` each from
    one continuous distribution (Gnedenko-Korolyuk; conservative with ties).

    Raises:
      ValueError: ``n < 1`` or ``k`` outside ``0..n``.
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"ks_pvalue: need n >= 1 and 0 <= k <= n, got n={n}, k={k}")
    if k == 0:
        return 1.0
    total = sum(
        (-1) ** (j + 1) * math.comb(2 * n, n - j * k) for j in range(1, n // k + 1)
    )
    return min(1.0, 2 * total / math.comb(2 * n, n))


class LossSample(NamedTuple):
    """One example's training losses over keys, and the test's outcome.

    Attributes:
      before, after: each side's losses, one per key (sorted).
      tol: values closer than this count as equal.
      k: ``n`` times the Kolmogorov-Smirnov distance (:func:`ks_statistic`).
      p: its exact p-value (:func:`ks_pvalue`).
    """

    before: np.ndarray
    after: np.ndarray
    tol: float
    k: int
    p: float


def loss_sample(before: Any, after: Any, tol: float = 0.0) -> LossSample:
    """The two-sample test of one example's losses (see the module doc)."""
    b, a = (np.sort(np.asarray(x, np.float64).ravel()) for x in (before, after))
    k = ks_statistic(b, a, tol)
    return LossSample(b, a, float(tol), k, ks_pvalue(b.size, k))
