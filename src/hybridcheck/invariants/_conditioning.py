"""The ill-conditioning probe: is a failed order comparison rounding or a bug?

jit vs eager and sharded vs single device compare two evaluation orders of the same
math. On an ill-conditioned example (BatchNorm over a batch of identical rows: its
output is rounding noise divided by sqrt(eps), and a ReLU after it takes a branch by
the sign of that noise) a *correct* step gives different results in the two orders,
so the example cannot tell a bug from rounding. When a comparison fails we measure
that: nudge every floating input by float32 rounding (relative 2**-23, a fixed sign
pattern) and replay *our* SGD step (p - lr * grad of the loss) in float64 at both
points. If that moves by more than a quarter of the invariant's tolerance the
example is not applicable. That replay never runs the step under test, so a broken
step cannot excuse itself through it.

A second probe covers what an SGD replay cannot see: an optimizer that amplifies
rounding (Adam at step 1 updates by ``g / (|g| + eps)``, so a gradient entry that is
pure cancellation noise, ~1e-8, moves by up to ``lr`` when its rounding changes).
For jit vs eager it runs the step under test *jitted*, in its own dtype, at the
nudged inputs. A jitted function is a pure function of its inputs: the Python-side
state that jit_matches_eager exists to catch is frozen into it at trace time, so
its response to a rounding-sized nudge measures the conditioning of the step's
math only, never the bug. Both probes run only after a failure, so passing
examples pay nothing.

Both nudges are one rounding step of the precision the float64 replay of the loss
actually ran in (see ``_precision``): float32 rounding where it ran in float64 or
float32, bfloat16 rounding where a layer computes in bfloat16 (a float32-sized
nudge would be rounded away there and measure nothing).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat
from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.subject import Example, Subject, to64
from hybridcheck.describe.trees import InvariantNotApplicable
from hybridcheck.invariants._order import JIT_EAGER_TOL, step_order_problems
from hybridcheck.invariants._precision import (
    Precision,
    abstract64,
    replay_precision,
)

NUDGE = float(np.finfo(np.float32).eps)
"""Relative size of the nudge: one float32 rounding step."""
PROBE_FRACTION = 0.25
"""A correct step that moves by this fraction of the tolerance under the nudge makes
the example too ill-conditioned to compare."""
PROBE_TOL = {k: v * PROBE_FRACTION for k, v in JIT_EAGER_TOL.items()}


def nudged(tree: PyTree, rel: float = NUDGE) -> PyTree:
    """Every floating leaf plus ``rel * max|leaf|`` times a fixed +-1 pattern."""
    flat, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(0)
    out = []
    for leaf in flat:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and np.size(leaf):
            scale = float(jnp.max(jnp.abs(leaf))) or 1.0
            signs = rng.choice(np.array([-1.0, 1.0]), size=np.shape(leaf))
            leaf = leaf + jnp.asarray(rel * scale * signs, jnp.result_type(leaf))
        out.append(leaf)
    return jax.tree.unflatten(treedef, out)


def reference_sgd(s: Subject, params: Any, batch: Any, lr: Any) -> Any:
    """``p - lr * grad`` on the trainable halves; the others as they were."""
    halves, grads = s.split(params), s.grad_fn(params, batch)
    return s.join(
        params,
        {
            h: jax.tree.map(lambda p, g: p - lr * g, tree, grads[h])
            if h in grads
            else tree
            for h, tree in halves.items()
        },
    )


def loss_precision(s: Subject, e: Example) -> Precision:
    """The precision the float64 replay of the example's loss actually runs in."""
    with compat.enable_x64():
        try:  # shapes and dtypes suffice: nothing of the model's size is copied
            abstract = (abstract64(e.params), abstract64(e.batch))
        except Exception:  # noqa: BLE001 - a leaf without a dtype: cast it
            abstract = (to64(e.params), to64(e.batch))
        return replay_precision(s.loss64, *abstract)


def raise_if_ill_conditioned(
    s: Subject, e: Example, *, with_loss: bool, probe_step: bool = False
) -> None:
    """Raises InvariantNotApplicable if rounding-sized nudges move a correct step.

    The two reference results are compared with ``PROBE_FRACTION`` of the jit/eager
    tolerances (leaves, and with ``with_loss`` the loss after the step). With
    ``probe_step``, the jitted step under test at the example and at the nudged
    example are compared too (leaves only). The nudge is one rounding step of the
    precision the loss runs in, float32's at least.
    """
    precision = loss_precision(s, e)
    rel = max(NUDGE, precision.eps)
    if probe_step:
        _raise_if_step_amplifies_rounding(s, e, rel, precision)
    try:
        with compat.enable_x64():
            params, batch = to64(e.params), to64(e.batch)
            lr = jnp.float64(e.lr)
            ref = reference_sgd(s, params, batch, lr)
            nudged_batch = nudged(batch, rel)
            moved = reference_sgd(s, nudged(params, rel), nudged_batch, lr)
            losses = (
                (
                    float(s.loss64(params, batch)),
                    float(s.loss64(ref, batch)),
                    float(s.loss64(moved, nudged_batch)),
                )
                if with_loss
                else None
            )
        problems = step_order_problems(
            ref,
            moved,
            ("correct step", "nudged inputs"),
            old=params,
            losses=losses,
            **PROBE_TOL,
        )
    except Exception:  # noqa: BLE001 - if the probe cannot run, the verdict stands
        return
    if problems:
        raise InvariantNotApplicable(
            f"ill-conditioned example: nudging the inputs by {_rounding(precision)} "
            f"(relative {rel:.2g}) moves a correct SGD step by more than a quarter "
            f"of the tolerance ({problems[0]}); two evaluation orders of the same "
            "math differ here by rounding alone (for example BatchNorm over a batch "
            "of identical rows)"
        )


def _rounding(precision: Precision) -> str:
    if precision.eps <= NUDGE:
        return "float32 rounding"
    return f"{precision.name} rounding (the replay ran in {precision.describe()})"


def _raise_if_step_amplifies_rounding(
    s: Subject, e: Example, rel: float, precision: Precision
) -> None:
    try:
        at_example = s.jitted_result(e)
        at_nudged = s.jitted(nudged(e.params, rel), nudged(e.batch, rel), e.lr)
        problems = step_order_problems(
            at_example,
            at_nudged,
            ("jitted step", "jitted step at nudged inputs"),
            old=e.params,
            losses=None,  # leaves only: the loss tolerances in PROBE_TOL go unused
            **PROBE_TOL,
        )
    except Exception:  # noqa: BLE001 - if the probe cannot run, the verdict stands
        return
    if problems:
        raise InvariantNotApplicable(
            f"ill-conditioned example: nudging the inputs by {_rounding(precision)} "
            f"(relative {rel:.2g}) moves the jitted step itself by more than a "
            f"quarter of the tolerance ({problems[0]}): the step amplifies rounding "
            "here (for example Adam's g / (|g| + eps) on a gradient entry that is "
            "cancellation noise), so eager and jit cannot be compared on it"
        )
