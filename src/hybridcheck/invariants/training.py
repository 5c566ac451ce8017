"""Invariants about training beyond one step: state, randomness, trajectories, tx."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hybridcheck.invariants._tree import (
    fail,
    index_str,
    leaf_triples,
    leaves,
    paired_halves,
)
from hybridcheck.invariants.updates import assert_update_changes_exactly_graded_leaves

__all__ = [
    "STATE_TOL",
    "TX_TOL",
    "assert_state_is_threaded",
    "assert_randomness_is_used",
    "assert_every_trainable_is_trained",
    "assert_update_matches_tx",
]

STATE_TOL: dict[str, float] = {"rtol": 1e-5, "atol": 1e-6}
"""The step's forward pass and a separate forward pass are two compiled programs:
their float32 statistics agree to a few ulp, not bitwise."""
TX_TOL: dict[str, float] = {"rtol": 1e-6, "atol": 1e-9, "update_tol": 1e-6}
"""float64 replays of the same optimizer math: agreement to ~1e-12 is expected; the
slack covers gradients that are cancellation noise (Adam divides by |g| + eps)."""


def assert_state_is_threaded(
    old: Any,
    new: Any,
    forward: Any,
    *,
    rtol: float = STATE_TOL["rtol"],
    atol: float = STATE_TOL["atol"],
) -> None:
    """State that a training forward pass updates comes back from the step updated.

    Args:
      old: the state halves before the step, by half.
      new: the state halves the step returned, by half.
      forward: the state halves as one training forward pass at ``old`` leaves them.

    A leaf the forward pass changes must come back equal to what the forward pass
    produced (to ``rtol``/``atol``; integers exactly). A leaf the forward pass leaves
    alone is exempt.
    """
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
                bad = n_ != f_
            else:
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
            problems.append(
                f"half '{label}' leaf {path}{index_str(i)}: the forward pass updates "
                f"it to {_num(f_[i])} (from {_num(o_[i])}) but the step's result "
                f"{what}: {_num(n_[i])}"
            )
    fail(
        "state_is_threaded",
        problems,
        "The step must return the state its forward pass produced: BatchNorm "
        "statistics from the forward pass in training mode (mutable=['batch_stats'] "
        "in Linen, the module's updated BatchStat in NNX), not the old state, not "
        "state moved by the optimizer, not state from an eval-mode pass.",
    )


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


def assert_every_trainable_is_trained(
    trajectory: Sequence[Any],
    grads: Sequence[Any],
    *,
    lr: float,
    frozen: Callable[[str, str], bool] | None = None,
) -> None:
    """Along a few consecutive steps, every trainable leaf with a gradient moves.

    Args:
      trajectory: the trainable params ``p0, p1, ..., pK`` of K consecutive steps of
        the step under test, by half.
      grads: the gradients ``g0, ..., g(K-1)`` at ``p0, ..., p(K-1)``, by half.
      lr: the learning rate of the steps.
      frozen: ``frozen(half, leaf_path) -> bool`` for leaves frozen on purpose.

    One step from initialisation is not enough: with LoRA's ``lora_b = 0`` the
    gradient of ``lora_a`` is exactly zero at the first step and nonzero from the
    second, so a step that leaves ``lora_a`` out shows only along the trajectory.
    """
    if len(trajectory) != len(grads) + 1 or not grads:
        raise ValueError(
            f"trajectory must hold one more point than grads (K >= 1 steps), got "
            f"{len(trajectory)} points and {len(grads)} gradients"
        )
    problems = []
    for i, g in enumerate(grads):
        try:
            assert_update_changes_exactly_graded_leaves(
                trajectory[i],
                trajectory[i + 1],
                g,
                lr=lr,
                allow_change_without_grad=True,
            )
        except AssertionError as exc:
            lines = [
                line.strip()[2:]
                for line in str(exc).splitlines()
                if line.strip().startswith("- ")
            ]
            problems += [
                f"step {i + 1}: {line}"
                for line in lines
                if not (frozen and _is_frozen(line, frozen))
            ]
    fail(
        "every_trainable_is_trained",
        problems,
        "A trainable leaf (an nnx.Param or subclass such as nnx.LoRAParam, a Linen "
        "'params' leaf) got a gradient but the step did not update it: it is left "
        "out of the optimizer (nnx.Optimizer(wrt=...) or a filter that misses it) or "
        "out of the differentiated arguments.",
    )


def _is_frozen(line: str, frozen: Callable[[str, str], bool]) -> bool:
    # "half 'nnx' leaf ['a']['b']: ..." -> ("nnx", "['a']['b']")
    try:
        half = line.split("half '", 1)[1].split("'", 1)[0]
        path = line.split(" leaf ", 1)[1].split(":", 1)[0]
    except IndexError:
        return False
    return frozen(half, path)


def assert_update_matches_tx(
    expected: Sequence[Any],
    actual: Sequence[Any],
    old: Sequence[Any],
    *,
    rtol: float = TX_TOL["rtol"],
    atol: float = TX_TOL["atol"],
    update_tol: float = TX_TOL["update_tol"],
) -> None:
    """Each of a few consecutive steps equals the case's optax ``tx`` applied to the
    gradient, with the optimizer state threaded from step to step.

    Args:
      expected: per step, ``p + tx.update(g, state, p)`` (trainable, by half).
      actual: per step, the step under test's result (trainable, by half).
      old: per step, the params the step started from.
    """
    problems = []
    for step, (e, a, o) in enumerate(zip(expected, actual, old, strict=True)):
        for label, path, el, al, ol in leaf_triples(e, a, o):
            e_, a_, o_ = (np.asarray(x, np.float64) for x in (el, al, ol))
            scale = float(np.max(np.abs(e_ - o_), initial=0.0))
            bad = ~np.isclose(a_, e_, rtol=rtol, atol=atol + update_tol * scale)
            if np.any(bad):
                i = tuple(np.argwhere(bad)[0])
                problems.append(
                    f"step {step + 1}: half '{label}' leaf {path}{index_str(i)}: "
                    f"step gave {a_[i]:.10g}, tx gives {e_[i]:.10g} (update "
                    f"{e_[i] - o_[i]:.4g})"
                )
    fail(
        "update_matches_tx",
        problems,
        "The step does not apply the optimizer it declares: a different "
        "hyperparameter (lr, betas, eps, weight decay), the optimizer state not "
        "threaded between steps (re-initialised each step), a schedule that does not "
        "advance, or gradients transformed before the optimizer.",
    )
