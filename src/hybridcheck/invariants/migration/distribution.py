"""Stochastic equivalence: with the stochastic layers on, the migrated model's
training loss over many keys is distributed as the original's.

Linen and NNX draw different dropout masks from the same key, so no key-by-key
comparison can judge a stochastic migration; a dropout rate changed from 0.5 to 0.1,
or a dropout moved to another layer, leaves the deterministic model unchanged. On
each example both sides' training losses are drawn over ``KEYS`` keys each (through
the sides' ``reseed``; disjoint keys, so the two samples are independent; a side
without one whose training loss equals its eval loss has no randomness left and
gives one value for every key) and compared by a two-sample Kolmogorov-Smirnov test:

* it sees any difference of distribution (a rate mostly changes the spread of the
  loss, a moved dropout its shape), where a t-test sees only the mean;
* for equal sample sizes its null distribution is known exactly (Gnedenko and
  Korolyuk): the false-alarm probability is exact for continuous losses and smaller
  with ties (few distinct masks), with no simulation and no asymptotics;
* two values within ``HARD_UNITS`` float32 roundings of each other count as equal
  (the statistic of Levy: ``F_b(t) - F_a(t + tol)``): a migration whose new layers
  run in float32 moves every loss by its rounding, and that can only lower the
  statistic, so the test stays exact or conservative.

The verdict controls the false alarm per case and run at ``ALPHA``: an example with
``p < ALPHA / MAX_EXAMPLES`` fails at once (so it can be shrunk), and across the
``n`` examples compared the smallest p-value must stay above ``ALPHA / n``
(Bonferroni, valid however the examples depend on each other). The keys are derived
from the example's batch, so a derandomized run (the ``ci`` profile) gives the same
verdict every time: a correct migration is failed by at most ``ALPHA`` of the key
streams, never intermittently.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat
from hybridcheck.describe.migration_case import MigrationSubject
from hybridcheck.describe.subject import Example, Subject, to64
from hybridcheck.describe.trees import InvariantNotApplicable, fail
from hybridcheck.invariants.migration._ks import (
    LossSample,
    ks_pvalue,
    ks_statistic,
    loss_sample,
)
from hybridcheck.invariants.migration.deviation import EXACT_RTOL, HARD_UNITS
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "ALPHA",
    "KEYS",
    "MAX_EXAMPLES",
    "LossSample",
    "assert_loss_distribution_matches_before",
    "ks_pvalue",
    "ks_statistic",
    "loss_sample",
    "sample_losses",
]

NAME = "loss_distribution_matches_before"

KEYS = 256
"""Training losses drawn per side and example (keys for each side's ``reseed``)."""

ALPHA = 1e-3
"""The false-alarm probability of the invariant per case and run."""

MAX_EXAMPLES = 1000
"""The verdict holds the false alarm at ``ALPHA`` for up to this many examples: one
example with ``p < ALPHA / MAX_EXAMPLES`` fails at once."""

CHUNK = 16
"""Keys evaluated per call (``jax.vmap`` over a chunk): memory of 16 forward passes."""

HINT = (
    "With its stochastic layers on, the migrated model's training loss over many keys "
    "is distributed unlike the original's: a dropout rate changed, a dropout moved to "
    "another layer or dropped, a deterministic flag inverted, noise of another scale. "
    "(Linen and NNX draw different masks from the same key, so the two are compared "
    "in distribution over keys, not key by key.)"
)


def _spread(x: np.ndarray) -> str:
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return f"median {med:.4g} (quartiles {q1:.4g} .. {q3:.4g})"


def assert_loss_distribution_matches_before(
    samples: Sequence[LossSample], *, alpha: float = ALPHA, examples: int | None = None
) -> None:
    """Across examples, the two sides' training losses over keys agree in
    distribution: every example's p-value stays above ``alpha / examples``.

    Args:
      samples: per example, both sides' losses over keys (:func:`loss_sample`).
      alpha: the false-alarm probability over all the examples (Bonferroni).
      examples: how many examples ``alpha`` is shared by (default
        ``len(samples)``; ``MAX_EXAMPLES`` to judge one example on its own).

    Raises:
      ValueError: ``alpha`` outside ``(0, 1)`` or ``examples < len(samples)``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    n = len(samples) if examples is None else examples
    if n < len(samples):
        raise ValueError(f"examples must be >= len(samples), got {examples!r}")
    failing = sorted(
        ((i, s) for i, s in enumerate(samples) if s.p < alpha / max(n, 1)),
        key=lambda t: t[1].p,
    )
    problems = [
        f"example {i + 1} of {len(samples)}: Kolmogorov-Smirnov distance "
        f"{s.k / s.before.size:.3g} over {s.before.size} keys per side (exact p = "
        f"{s.p:.3g} < {alpha:g}/{n}, false alarm <= {alpha:g} over {n} examples); "
        f"training loss before: {_spread(s.before)}; after: {_spread(s.after)}"
        for i, s in failing[:3]
    ]
    if len(failing) > 3:
        problems.append(f"... and {len(failing) - 3} more examples")
    fail("loss_distribution_matches_before", problems, HINT)


def _salt(batch: Any) -> int:
    """A seed from the batch's bytes: the same example draws the same keys."""
    crc = 0
    for leaf in jax.tree.leaves(batch):
        if jax.dtypes.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).tobytes(), crc)
    return crc & 0x7FFFFFFF


def keys_for(salt: int, side: int) -> Any:
    """``KEYS`` raw keys for one side (``side`` 0 or 1: disjoint streams)."""
    base = jax.random.fold_in(jax.random.PRNGKey(salt), side)
    return jax.random.split(base, KEYS)


def _losses(
    ms: MigrationSubject, side: int, s: Subject, p: Any, b: Any, salt: int
) -> np.ndarray:
    """``s``'s training loss at each of ``KEYS`` keys, ``CHUNK`` keys per call."""

    def one(key: Any, params: Any, batch: Any) -> Any:
        return s.loss(*s.reseed(params, batch, key))  # type: ignore[misc]

    name = f"losses over keys, side {side}"
    if name not in ms.memo:
        ms.memo[name] = jax.jit(jax.vmap(one, in_axes=(0, None, None)))
    keys, run = keys_for(salt, side), ms.memo[name]
    try:
        chunks = [run(keys[i : i + CHUNK], p, b) for i in range(0, KEYS, CHUNK)]
        return np.concatenate([np.asarray(c, np.float64) for c in chunks])
    except Exception:  # noqa: BLE001 - a reseed or loss that cannot be vmapped
        return np.asarray([s.loss64(*s.reseed(p, b, k)) for k in keys], np.float64)  # type: ignore[misc]


def _no_reseed(missing: Sequence[int]) -> str:
    names = " and ".join(("before", "after")[i] for i in missing)
    return (
        f"no reseed on the {names} side: give each stochastic side reseed=(params, "
        "batch, key) -> (params, batch) (from_nnx sets it for a model with Dropout "
        "and RNG state)"
    )


def _constant(ms: MigrationSubject, side: int, p: Any, b: Any) -> np.ndarray:
    """The losses of a training side without ``reseed``: one value for every key
    where its training loss is its eval loss (no stochastic layer left, as
    ``from_nnx`` sets no reseed then: a dropout left out of the migrated model)."""
    trained = (ms.stochastic or (ms.before, ms.after))[side]
    train = float(trained.loss64(p, b))
    evaluated = float((ms.before, ms.after)[side].loss64(p, b))
    if abs(train - evaluated) > EXACT_RTOL * max(abs(evaluated), 1e-30):
        why = (
            _no_reseed([side]) + f"; its training loss {train:.6g} is not its eval "
            f"loss {evaluated:.6g}, so it draws randomness no key given here varies"
        )
        ms.evidence.setdefault(f"{NAME}:unvaried", []).append(why)
        raise InvariantNotApplicable(why)
    return np.full(KEYS, train)


def sample_losses(
    ms: MigrationSubject, e: Example, salt: int | None = None
) -> LossSample:
    """Both sides' training losses over ``KEYS`` keys each on one example, in
    float64, and the two-sample test of them.

    Args:
      ms: the migration; its training sides (``ms.stochastic``, else ``before`` and
        ``after``) must have a ``reseed``, except a side whose training loss is
        its eval loss (it has no randomness left: one value for every key).
      e: the example: the before params (converted for the after side) and batch.
      salt: seeds the keys (default: from the batch's bytes, so the same example
        draws the same keys).

    Raises:
      InvariantNotApplicable: neither side has ``reseed``, or one without it
        draws randomness (its training loss is not its eval loss).
    """
    sides = ms.stochastic or (ms.before, ms.after)
    missing = [i for i, side in enumerate(sides) if not side.reseed]
    if len(missing) == 2 and ms.stochastic is None:
        raise InvariantNotApplicable(
            "neither side declares randomness (no reseed, no before_eval / after_eval)"
        )
    if missing and (len(missing) == 2 or ms.stochastic is None):
        raise InvariantNotApplicable(_no_reseed(missing))
    salt = _salt(e.batch) if salt is None else salt
    # The deterministic model's float32 rounding on this example, where there is one
    # (a stochastic model draws other masks in float32 than in float64).
    eval32 = ms.before.loss_fn(e.params, e.batch) if ms.stochastic else None
    with compat.enable_x64():
        b64 = to64(e.batch)
        params = (to64(e.params), ms.convert64(e.params))
        losses = tuple(
            _constant(ms, i, params[i], b64)
            if i in missing
            else _losses(ms, i, sides[i], params[i], b64, salt)
            for i in (0, 1)
        )
        noise = 0.0
        if eval32 is not None:
            noise = abs(float(eval32) - float(ms.before.loss64(params[0], b64)))
    finite = np.concatenate([x[np.isfinite(x)] for x in losses])
    size = float(np.max(np.abs(finite))) if finite.size else 0.0
    tol = HARD_UNITS * max(noise, float(np.finfo(np.float32).eps) * size)
    return loss_sample(losses[0], losses[1], tol=tol)


def check_loss_distribution_matches_before(ms: MigrationSubject, e: Example) -> None:
    sample = sample_losses(ms, e)
    ms.evidence.setdefault(NAME, []).append(sample)
    if sample.p < ALPHA / MAX_EXAMPLES:  # decisive alone: fail now, to shrink it
        assert_loss_distribution_matches_before([sample], examples=MAX_EXAMPLES)


def conclude_loss_distribution_matches_before(ms: MigrationSubject) -> str:
    samples = ms.evidence.get(NAME, [])
    if ms.evidence.get(f"{NAME}:unvaried"):  # the inert examples prove nothing
        raise InvariantNotApplicable(ms.evidence[f"{NAME}:unvaried"][0])
    if not samples:
        raise InvariantNotApplicable("no example was compared")
    assert_loss_distribution_matches_before(samples)
    worst = min(s.p for s in samples)
    return (
        f"training losses over {KEYS} keys per side agree in distribution on all "
        f"{len(samples)} examples (smallest exact Kolmogorov-Smirnov p = {worst:.3g}; "
        f"false-alarm probability <= {ALPHA:g} per run)"
    )


# This family's row of the registry (report order).
register(
    Invariant(
        "loss_distribution_matches_before",
        "(migration) with the stochastic layers on, training losses over "
        f"{KEYS} keys per side distributed unlike the original's (a dropout rate "
        "changed, a dropout moved or dropped): exact two-sample Kolmogorov-Smirnov, "
        f"false alarm <= {ALPHA:g} per run",
        check_loss_distribution_matches_before,
        conclude=conclude_loss_distribution_matches_before,
        kind="migration",
        cost=("convert", "float64"),
        convincing=8,  # the false alarm is shared by the examples (Bonferroni)
    ),
)
