"""State beyond the params: statistics threaded through the step, randomness used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import (
    InvariantNotApplicable,
    fail,
    index_str,
    leaves,
    paired_halves,
)
from hybridcheck.invariants.registry import Invariant, register
from hybridcheck.invariants.updates import new_params

__all__ = [
    "STATE_TOL",
    "RESEED_KEYS",
    "assert_state_is_threaded",
    "forwards_per_step",
    "assert_randomness_is_used",
]

STATE_TOL: dict[str, float] = {"rtol": 1e-5, "atol": 1e-6}
"""The step's forward pass and a separate forward pass are two compiled programs:
their float32 statistics agree to a few ulp, not bitwise."""


def assert_state_is_threaded(
    old: Any,
    new: Any,
    forward: Any,
    *,
    forwards: int = 1,
    rtol: float = STATE_TOL["rtol"],
    atol: float = STATE_TOL["atol"],
) -> None:
    """State that a training forward pass updates comes back from the step updated.

    Args:
      old: the state halves before the step, by half.
      new: the state halves the step returned, by half.
      forward: the state halves as one training forward pass at ``old`` leaves them.
      forwards: how many training forward passes the step runs per update (2 for
        gradient accumulation over two micro-batches; see
        :func:`forwards_per_step`).

    A leaf the forward pass changes must come back equal to what the forward pass
    produced (to ``rtol``/``atol``; integers exactly). With ``forwards = n > 1``
    an integer leaf (a counter, an RNG count) must have advanced ``n`` times as far
    and a floating leaf (statistics of micro-batches the step chose) must have been
    updated. A leaf the forward pass leaves alone is exempt.
    """
    if not isinstance(forwards, int) or forwards < 1:
        raise ValueError(f"forwards must be a positive int, got {forwards!r}")
    problems = []
    for (label, o, n), (_, _, f) in zip(
        paired_halves(old, new, ("old state", "new state")),
        paired_halves(old, forward, ("old state", "forward state")),
        strict=True,
    ):
        for (path, ol), (_, nl), (_, fl) in zip(
            leaves(o), leaves(n), leaves(f), strict=True
        ):
            o_, n_, f_ = np.asarray(ol), np.asarray(nl), np.asarray(fl)
            if np.array_equal(o_, f_) or n_.shape != f_.shape:
                continue
            exact = not np.issubdtype(f_.dtype, np.inexact)
            if exact:
                want = o_.astype(np.int64) + forwards * (
                    f_.astype(np.int64) - o_.astype(np.int64)
                )
                bad = n_.astype(np.int64) != want
            elif forwards > 1:
                want = f_
                bad = (n_ == o_) & (f_ != o_)
            else:
                want = f_
                bad = ~np.isclose(
                    n_.astype(np.float64), f_.astype(np.float64), rtol=rtol, atol=atol
                )
            if not np.any(bad):
                continue
            i = tuple(np.argwhere(bad)[0])
            what = (
                "came back unchanged (stale)"
                if np.array_equal(n_, o_)
                else "came back with another value"
            )
            times = f" ({forwards} forward passes)" if forwards > 1 else ""
            problems.append(
                f"half '{label}' leaf {path}{index_str(i)}: the forward pass updates "
                f"it to {_num(want[i])}{times} (from {_num(o_[i])}) but the step's "
                f"result {what}: {_num(n_[i])}"
            )
    fail(
        "state_is_threaded",
        problems,
        "The step must return the state its forward pass produced: BatchNorm "
        "statistics from the forward pass in training mode (mutable=['batch_stats'] "
        "in Linen, the module's updated BatchStat in NNX), not the old state, not "
        "state moved by the optimizer, not state from an eval-mode pass.",
    )


def forwards_per_step(old: Any, new: Any, forward: Any) -> int:
    """How many training forward passes the step ran, from its RNG counts.

    Args:
      old, new, forward: the RNG state halves (``nnx.RngCount`` leaves) before the
        step, after it, and after one forward pass, by half.

    Every training forward draws the same number of keys, so a step running ``n``
    of them (gradient accumulation, micro-batches) advances every count that one
    forward pass advances by ``n`` times as much. Returns that ``n`` where it is
    one whole number >= 1 for every such count, else 1 (no count moves, or the
    counts disagree: ``assert_state_is_threaded`` then names them).
    """
    ratios = set()
    for (_, o, n), (_, _, f) in zip(
        paired_halves(old, new, ("old state", "new state")),
        paired_halves(old, forward, ("old state", "forward state")),
        strict=True,
    ):
        for (_, ol), (_, nl), (_, fl) in zip(
            leaves(o), leaves(n), leaves(f), strict=True
        ):
            o_, n_, f_ = (np.asarray(x) for x in (ol, nl, fl))
            if np.issubdtype(f_.dtype, np.inexact) or n_.shape != f_.shape:
                continue
            drawn = f_.astype(np.int64) - o_.astype(np.int64)
            ran = n_.astype(np.int64) - o_.astype(np.int64)
            moved = drawn != 0
            ratios |= {
                (int(r), int(d)) for r, d in zip(ran[moved], drawn[moved], strict=True)
            }
    counts = {r // d for r, d in ratios if d > 0 and r % d == 0}
    if len(counts) == 1 and all(r % d == 0 for r, d in ratios if d > 0):
        (n,) = counts
        return n if n >= 1 else 1
    return 1


def _num(x: Any) -> str:
    return (
        f"{float(x):.8g}" if np.issubdtype(np.asarray(x).dtype, np.inexact) else str(x)
    )


def assert_randomness_is_used(
    key_mattered: Sequence[bool],
    *,
    advanced: Sequence[bool] = (),
) -> None:
    """Across examples, a stochastic model's result depends on its key.

    Args:
      key_mattered: per example, whether two different keys gave different results
        (one example may not show it: Dropout of all-zero activations is zero
        whatever the mask).
      advanced: per example, whether the RNG state the step returned gives another
        result than the RNG state it was given (where RNG state lives in params).
    """
    if not key_mattered:
        raise ValueError("key_mattered must hold at least one example's verdict")
    problems = []
    n = len(key_mattered)
    if not any(key_mattered):
        problems.append(
            f"on all {n} examples, different keys gave the same result: the model "
            "ignores its randomness"
        )
    if advanced and not any(advanced):
        problems.append(
            f"on all {len(advanced)} examples, the RNG state the step returned gives "
            "the same result as the one it was given: the next step reuses the mask"
        )
    fail(
        "randomness_is_used",
        problems,
        "A model with stochastic layers must draw new randomness from its key in "
        "training mode: look for Dropout left deterministic (eval mode) in the train "
        "step, a key that is not passed through (rngs= missing, a constant key), or "
        "an RNG state that the step does not return (the mask is reused every step).",
    )


RESEED_KEYS = (11, 12)
"""Two fixed keys: the randomness invariant compares the model under each."""


def check_state_is_threaded(s: Subject, e: Example) -> None:
    if s.forward_state is None:
        raise InvariantNotApplicable("the case has no state_fn")
    forward = s.forward_state(e.params, e.batch)
    old, new = s.split(e.params), s.split(new_params(s, e, "state_is_threaded"))
    unknown = set(forward) - set(old)
    if unknown:
        raise ValueError(
            f"{s.name}: state_fn returned halves {sorted(unknown)} that params lacks "
            f"(halves {list(old)})"
        )
    # A step that runs several training forwards per update (gradient
    # accumulation) is recognised from its own RNG counts.
    rng = [h for h in s.rng_halves if h in forward]
    forwards = (
        forwards_per_step(
            {h: old[h] for h in rng},
            {h: new[h] for h in rng},
            {h: forward[h] for h in rng},
        )
        if rng
        else 1
    )
    assert_state_is_threaded(
        {h: old[h] for h in forward},
        {h: new[h] for h in forward},
        forward,
        forwards=forwards,
    )


def _loss(s: Subject, params: Any, batch: Any) -> Any:
    return np.asarray(s.loss_fn(params, batch))


def check_randomness_is_used(s: Subject, e: Example) -> None:
    if s.reseed is None:
        raise InvariantNotApplicable("the case has no reseed")
    (p1, b1), (p2, b2) = (
        s.reseed(e.params, e.batch, jax.random.PRNGKey(k)) for k in RESEED_KEYS
    )
    first, again, other = _loss(s, p1, b1), _loss(s, p1, b1), _loss(s, p2, b2)
    if not np.array_equal(first, again):
        fail(
            "randomness_is_used",
            [f"the same key gave different losses: {first!r} then {again!r}"],
            "Randomness must come from the key alone: host randomness or state "
            "carried between calls makes the same key give other results.",
        )
    s.evidence.setdefault("randomness_is_used:key", []).append(
        not np.array_equal(first, other)
    )
    if s.rng_halves:
        old = s.split(e.params)
        new = s.split(new_params(s, e, "randomness_is_used"))
        advanced = s.join(e.params, {**old, **{h: new[h] for h in s.rng_halves}})
        s.evidence.setdefault("randomness_is_used:advanced", []).append(
            not np.array_equal(_loss(s, e.params, e.batch), _loss(s, advanced, e.batch))
        )


def conclude_randomness_is_used(s: Subject) -> None:
    key = s.evidence.get("randomness_is_used:key", [])
    if not key:
        raise InvariantNotApplicable("no example was checked")
    assert_randomness_is_used(
        key, advanced=s.evidence.get("randomness_is_used:advanced", [])
    )


# This family's rows of the registry (report order).
register(
    Invariant(
        "state_is_threaded",
        "state the training forward pass updates (BatchNorm statistics) returned "
        "stale, moved by the optimizer, or taken from another pass; a step running "
        "several training forwards (accumulation) is recognised by its RNG counts",
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
)
