"""One update of the migrated model compared with the converted original's, leaf by
leaf: floating leaves in float32-noise units, integer leaves exactly or not at all.

Floating leaves (params, statistics, optimizer moments) carry the model's math and
are compared in units of the original's float32 noise (``deviation``). Integer
leaves are bookkeeping: a step counter, an RNG stream's key and count. What kind a
leaf is decides how it is compared, never its name:

* RNG state (a leaf of a half the after side declares in ``rng_halves``, or a typed
  PRNG key) is not compared: Linen folds keys by module path, NNX counts draws per
  stream, so the two frameworks legitimately keep different RNG state; what they
  draw is compared in distribution by ``loss_distribution_matches_before``.
* Another integer leaf that both steps advance is a counter both sides keep: it is
  compared exactly and a difference is reported in its own values.
* One that only one step advances has no counterpart on the other side (the NNX
  optimizer's step where the original keeps none, a ``TrainState.step`` the
  original's step never advances): it is listed as not compared, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from hybridcheck import compat
from hybridcheck.describe.migration_case import MigrationSubject
from hybridcheck.describe.trees import leaves
from hybridcheck.invariants.migration.deviation import Deviation, deviation, tree_norm

__all__ = [
    "NotCompared",
    "compare_exactly",
    "is_exact",
    "not_compared_note",
    "update_deviations",
]


class NotCompared(NamedTuple):
    """A leaf with no counterpart on the other side, and why."""

    what: str
    reason: str


def is_exact(x: Any) -> bool:
    """Whether ``x`` is compared exactly (integers, booleans, PRNG keys)."""
    dtype = jax.numpy.result_type(x)
    return not jax.numpy.issubdtype(dtype, jax.numpy.inexact)


def _values(x: Any) -> np.ndarray:
    if jax.dtypes.issubdtype(jax.numpy.result_type(x), jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def _show(x: np.ndarray) -> str:
    """A small leaf's values, or its dtype and shape."""
    if x.size <= 4:
        return str(x.tolist())
    return f"{x.dtype}{list(x.shape)}"


def compare_exactly(
    what: str, start: Any, want: Any, got: Any, *, rng: bool
) -> Deviation | NotCompared | None:
    """One integer leaf after the step(s): ``None`` if both sides agree exactly.

    Args:
      what: names the leaf (``"update ['opt']['step']"``).
      start: the converted starting value.
      want: the original's step (or steps), converted.
      got: the migrated step's value.
      rng: the leaf is RNG state (see the module doc).

    Returns:
      ``None`` when ``want == got``; a :class:`NotCompared` for RNG state and for a
      leaf only one step advances; otherwise an exact :class:`Deviation` (both
      sides advance it to different values: a failure).
    """
    o, w, g = _values(start), _values(want), _values(got)
    if w.shape == g.shape and np.array_equal(w, g):
        return None
    values = (
        f"from {_show(o)}, the original's step leaves it at {_show(w)} (converted), "
        f"the migrated step at {_show(g)}"
    )
    rng = rng or jax.dtypes.issubdtype(jax.numpy.result_type(got), jax.dtypes.prng_key)
    if rng:
        return NotCompared(
            what,
            f"RNG state ({values}): Linen and NNX derive keys differently; what they "
            "draw is compared by loss_distribution_matches_before",
        )
    before_moved = not (w.shape == o.shape and np.array_equal(w, o))
    after_moved = not (g.shape == o.shape and np.array_equal(g, o))
    if before_moved and after_moved:
        return Deviation(what, np.inf, np.inf, 0, exact=values)
    only = "migrated" if after_moved else "original"
    return NotCompared(
        what,
        f"only the {only} step advances it ({values}): a counter the other side "
        "does not keep or never advances",
    )


def not_compared_note(skipped: Sequence[NotCompared]) -> str:
    """The report's line listing the leaves not compared (``""`` if none)."""
    first: dict[str, str] = {}
    for item in skipped:
        first.setdefault(item.what, item.reason)
    return "; ".join(f"not compared: {what}: {why}" for what, why in first.items())


def update_deviations(
    ms: MigrationSubject, start: Any, before_end: tuple[Any, Any], after_end: Any
) -> tuple[list[Deviation], list[NotCompared]]:
    """Deviations of the after model's update from the converted before update,
    and the integer leaves with no counterpart.

    Args:
      ms: the migration.
      start: the before params the steps started from.
      before_end: the before params after the steps, in float64 and in float32.
      after_end: the after params after the same steps from ``convert(start)``.
    """
    before64, before32 = before_end
    with compat.enable_x64():
        origin = ms.convert64(start)
        want64, want32 = ms.convert64(before64), ms.convert64(before32)
    moved = jax.tree.map(
        lambda w, o: (
            np.asarray(w, np.float64) - np.asarray(o, np.float64)
            if not is_exact(o)
            else np.zeros(())
        ),
        want64,
        origin,
    )
    scale = tree_norm(moved)
    rng = set(ms.after.rng_halves)
    if ms.stochastic is not None:
        rng |= set(ms.stochastic[1].rng_halves)
    split = ms.after.split(origin)
    half_of = ms.after.join(
        origin, {h: jax.tree.map(lambda _, h=h: h, t) for h, t in split.items()}
    )
    devs: list[Deviation] = []
    skipped: list[NotCompared] = []
    for (path, o), (_, w64), (_, w32), (_, got), (_, half) in zip(
        *map(leaves, (origin, want64, want32, after_end, half_of)), strict=True
    ):
        if is_exact(o):
            found = compare_exactly(f"update {path}", o, w64, got, rng=half in rng)
            if isinstance(found, NotCompared):
                skipped.append(found)
            elif found is not None:
                devs.append(found)
            continue
        o_ = np.asarray(o, np.float64)
        devs.append(
            deviation(
                f"update {path}",
                np.asarray(w64, np.float64) - o_,
                np.asarray(got, np.float64) - o_,
                np.asarray(w32, np.float64) - o_,
                scale=scale,
            )
        )
    return devs, skipped
