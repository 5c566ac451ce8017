"""How a step executes: repeatable, finite, leaves its inputs alone, traced once
per shape."""

from __future__ import annotations

import jax
import numpy as np

from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import (
    fail,
    leaves,
)
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "ENOUGH",
    "assert_deterministic",
    "assert_all_finite",
    "assert_inputs_unchanged",
    "assert_retrace_budget",
]

ENOUGH = 5
"""Examples ``deterministic`` and ``inputs_unchanged`` run on at most: what they
catch (host randomness, Python state that changes between two calls, a mutated or
donated input) is in the code's structure, not the values drawn, since a step jit
traces cannot branch on values; five examples cover the degenerate ones (a zero
batch, lr 0). ``jit_matches_eager`` is not capped: whether a value baked in at
trace time differs from the current one depends on how many calls came before."""


def assert_deterministic(first: PyTree, second: PyTree) -> None:
    """Two runs on the same inputs gave bitwise-equal outputs."""
    problems = []
    first_leaves, second_leaves = leaves(first), leaves(second)
    for (path, a), (_, b) in zip(first_leaves, second_leaves, strict=False):
        a_, b_ = np.asarray(a), np.asarray(b)
        if a_.shape != b_.shape or not np.array_equal(a_, b_, equal_nan=True):
            diff = (
                np.max(np.abs(a_.astype(np.float64) - b_.astype(np.float64)))
                if a_.shape == b_.shape
                else "shape"
            )
            problems.append(f"{path}: runs differ (max |diff| = {diff})")
    if len(first_leaves) != len(second_leaves):
        problems.append("the two runs returned different tree structures")
    fail(
        "deterministic",
        problems,
        "Same params, batch and lr must give the same bits. Look for host randomness "
        "(numpy/random without a fixed key), a PRNG key that is not an input, or "
        "state carried between calls.",
    )


def assert_all_finite(tree: PyTree, *, what: str = "outputs") -> None:
    """Every leaf of ``tree`` is finite (no NaN/Inf)."""
    problems = []
    for path, leaf in leaves(tree):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            n_bad = int(np.sum(~np.isfinite(arr)))
            problems.append(f"{what}{path}: {n_bad} of {arr.size} values are NaN/Inf")
    fail(
        "all_finite",
        problems,
        "NaN/Inf after one step on finite inputs: a division by zero, log/sqrt of 0, "
        "an overflowing lr, or an uninitialised (NaN) variable.",
    )


def assert_inputs_unchanged(snapshot: PyTree, inputs: PyTree) -> None:
    """Inputs still hold the values of ``snapshot`` (a NumPy copy made before the
    step) and none of their buffers was donated/deleted."""
    problems = []
    for (path, s), (_, leaf) in zip(leaves(snapshot), leaves(inputs), strict=False):
        if isinstance(leaf, jax.Array) and leaf.is_deleted():
            problems.append(f"input{path}: buffer was deleted (donated to the step)")
            continue
        if not np.array_equal(np.asarray(s), np.asarray(leaf), equal_nan=True):
            problems.append(f"input{path}: value changed during the step")
    fail(
        "inputs_unchanged",
        problems,
        "The step mutated or donated its inputs. Callers (and the loss before/after "
        "comparison) keep using them: copy before in-place NumPy ops, and do not "
        "donate_argnums arrays the caller still owns.",
    )


def assert_retrace_budget(traces: int, budget: int, *, what: str = "step") -> None:
    """``traces`` (from :class:`~hybridcheck.TraceCounter`) <= ``budget``."""
    if traces > budget:
        fail(
            "retrace_budget",
            [f"{what} traced {traces} times, budget is {budget} (one per input shape)"],
            "Something that should be a traced value is a Python constant baked into "
            "the trace (lr or seed passed as a Python float/int to a static argument, "
            "a Python scalar in the batch), or shapes vary more than expected.",
        )


def check_deterministic(s: Subject, e: Example) -> None:
    # The memoized run is a real earlier run; the second is always a fresh one.
    assert_deterministic(s.jitted_result(e), s.run_jitted(e))
    assert_deterministic(s.eager_result(e), s.run_eager(e))


def check_all_finite(s: Subject, e: Example) -> None:
    new = s.jitted_result(e)
    assert_all_finite(s.split(new, name="new params"), what="new_params")
    assert_all_finite({"loss": s.loss_fn(new, e.batch)}, what="")


def check_inputs_unchanged(s: Subject, e: Example) -> None:
    # The snapshot must predate every run on this example: taken by ``prepare``
    # before any invariant ran (the shared runs then show a mutation), or, when
    # another invariant already ran the step, followed by a fresh run here.
    before_runs, snapshot = s.inputs_snapshot(e)
    if before_runs:
        s.jitted_result(e)
        s.eager_result(e)
    else:
        s.run_jitted(e)
        s.run_eager(e)
    assert_inputs_unchanged(snapshot, (e.params, e.batch))


def prepare_inputs_unchanged(s: Subject, e: Example) -> None:
    s.inputs_snapshot(e)


def check_retrace_budget(s: Subject, e: Example) -> None:
    s.jitted_result(e)
    # Eager runs elsewhere call ``s.step`` itself, so ``traced`` counts jit traces.
    assert_retrace_budget(s.traced.count, len(s.shapes_seen))


# This family's rows of the registry (report order).
register(
    Invariant(
        "deterministic",
        "host randomness, state carried between calls",
        check_deterministic,
        cost=("step", "eager"),
        enough=ENOUGH,
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
        enough=ENOUGH,
        prepare=prepare_inputs_unchanged,
    ),
    Invariant(
        "retrace_budget",
        "more traces than distinct input shapes (lr or seed baked in as constants)",
        check_retrace_budget,
        cost=("step",),
    ),
)
