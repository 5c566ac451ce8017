"""Ill-conditioned examples are n/a: never false failures, never excuses for bugs.

jit vs eager and sharded vs single device compare two evaluation orders of the same
math. BatchNorm over a batch of identical rows normalises rounding noise by
sqrt(eps), so a correct step gives different results in the two orders; the
verifier's shared search found such batches (Hypothesis likes constant arrays).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcheck.cases import stateful
from hybridcheck.cases.mutants import MUTANTS
from hybridcheck.describe.strategies import SeedExample
from hybridcheck.describe.subject import Example, Subject
from hybridcheck.invariants import (
    InvariantNotApplicable,
    _conditioning,
    error_regex,
    registry,
)
from tests.seed_subject import seed_example_to_check, seed_subject

BN_SUBJECT = stateful.CASE.subject(stateful.init(jax.random.PRNGKey(0)))
Y = np.array([4.74, -4.91, -0.93, -1.45, 1.56, -3.07, 0.34, -4.16], np.float32)


def identical_rows(value: float, lr: float) -> Example:
    """The shape of the counterexamples the shared search found (values from it)."""
    batch = {
        "x": jnp.full((8, stateful.IN), value, jnp.float32),
        "y": jnp.asarray(Y[:, None]),
        "rng": jax.random.PRNGKey(0),
    }
    return Example(stateful.init(jax.random.PRNGKey(0)), batch, lr)


@pytest.mark.parametrize("value", [-3.762615919113159, 1e-4, 4.1832051277160645])
@pytest.mark.parametrize("with_loss", [True, False])
def test_batchnorm_over_identical_rows_is_ill_conditioned(value, with_loss):
    example = identical_rows(value, 0.0622)
    with pytest.raises(InvariantNotApplicable, match="ill-conditioned example"):
        _conditioning.raise_if_ill_conditioned(BN_SUBJECT, example, with_loss=with_loss)


@pytest.mark.parametrize(
    "invariant", ["jit_matches_eager", "sharded_matches_single_device"]
)
def test_correct_batchnorm_step_never_fails_on_identical_rows(invariant):
    example = identical_rows(-3.762615919113159, 0.0622)
    outcome = "held"
    try:
        registry.REGISTRY[invariant].check(BN_SUBJECT, example)
    except InvariantNotApplicable as exc:
        outcome = str(exc)
    # Either the two orders agreed, or the probe recognised the example; an
    # AssertionError (a false failure of a correct step) propagates and fails here.
    assert outcome == "held" or "ill-conditioned" in outcome, outcome


def test_well_conditioned_batchnorm_batch_is_not_excused():
    rng = np.random.default_rng(1)
    example = identical_rows(0.0, 0.05)
    example.batch["x"] = jnp.asarray(rng.normal(size=(8, stateful.IN)), jnp.float32)
    for with_loss in (True, False):
        _conditioning.raise_if_ill_conditioned(BN_SUBJECT, example, with_loss=with_loss)


def test_probe_does_not_excuse_a_broken_step_on_a_well_conditioned_example():
    # The probes replay our own SGD step and the *jitted* step under test, whose
    # Python-side state is frozen at trace time, so a bug cannot make them fire: on
    # an ordinary example the python_state mutant still fails.
    rng = np.random.default_rng(0)
    example = seed_example_to_check(
        SeedExample(
            seed=3,
            x=rng.normal(size=(4, 3)).astype(np.float32),
            y=rng.normal(size=(4, 2)).astype(np.float32),
            lr=0.05,
        )
    )
    mutant = next(m for m in MUTANTS if m.name == "python_state")
    subject = seed_subject(mutant.step)
    _conditioning.raise_if_ill_conditioned(
        subject, example, with_loss=True, probe_step=True
    )
    with pytest.raises(AssertionError, match=error_regex("jit_matches_eager")):
        registry.REGISTRY["jit_matches_eager"].check(subject, example)


def test_nudge_changes_only_floating_leaves_by_rounding():
    tree = {"x": jnp.ones((3, 2), jnp.float32) * 2, "key": jax.random.PRNGKey(3)}
    nudged = _conditioning.nudged(tree)
    np.testing.assert_array_equal(nudged["key"], tree["key"])
    delta = np.abs(np.asarray(nudged["x"], np.float64) - 2.0)
    assert np.all(delta > 0)
    assert np.all(delta <= 2 * 2 * _conditioning.NUDGE)


def test_loss_replays_are_float64_whatever_the_leaf_dtypes():
    # Under JAX_ENABLE_X64 an eager and a jitted step can return leaves of different
    # dtypes; jit_matches_eager compares their losses, so both must be replayed in
    # float64. In float32, 1e8 + 1 - 1e8 is 0; in float64 it is 1.
    def loss(params, batch):
        a, b = params
        return a[0] + a[1] + b[0] + batch

    subject = Subject(loss=loss, step=lambda p, b, lr: p, halves=("a", "b"))
    params = (jnp.array([1e8, 1.0], jnp.float32), jnp.array([-1e8], jnp.float32))
    example = Example(params, jnp.float32(0.0), 0.1)
    assert float(jnp.float32(1e8) + jnp.float32(1.0) - jnp.float32(1e8)) == 0.0
    assert subject.loss64_of(example, "before", params) == 1.0


def test_a_step_that_amplifies_rounding_is_ill_conditioned():
    # Adam's first step, u = lr * g / (|g| + eps), on a gradient that is pure
    # cancellation noise: a rounding-sized nudge of the batch flips the update.
    def loss(params, batch):
        a, b = params
        return jnp.sum(a) * jnp.mean(batch) + jnp.sum(b**2)

    def normalised_step(params, batch, lr):
        g = jax.grad(loss)(params, batch)
        return jax.tree.map(lambda p, d: p - lr * d / (jnp.abs(d) + 1e-8), params, g)

    subject = Subject(loss=loss, step=normalised_step, halves=("a", "b"))
    batch = jnp.array([1.0, -1.0, 0.5, -0.5], jnp.float32)  # mean exactly 0
    example = Example((jnp.ones(2), jnp.ones(1)), batch, 0.1)
    with pytest.raises(InvariantNotApplicable, match="amplifies rounding"):
        _conditioning.raise_if_ill_conditioned(
            subject, example, with_loss=True, probe_step=True
        )
    # The same step on a batch whose gradient is not noise is not excused.
    fine = example._replace(batch=jnp.array([1.0, 2.0, 3.0, 4.0], jnp.float32))
    _conditioning.raise_if_ill_conditioned(
        subject, fine, with_loss=True, probe_step=True
    )
