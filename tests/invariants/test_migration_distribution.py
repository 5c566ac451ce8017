"""Stochastic equivalence of a migration: the exact two-sample test, its false-alarm
rate, and the invariant on the built-in dropout migration and its bugs."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
import scipy.stats
from hypothesis import example, given, settings
from hypothesis import strategies as st

import hybridcheck as hc
from hybridcheck.cases.migrations.dropout import dropout_migration, dropout_mutants
from hybridcheck.describe.subject import Example
from hybridcheck.invariants import InvariantNotApplicable, error_regex
from hybridcheck.invariants.migration import distribution as dist
from hybridcheck.report.results import FAILED, HELD, NOT_APPLICABLE

INVARIANT = "loss_distribution_matches_before"


@pytest.mark.parametrize("n", [1, 3, 8, 32, 256])
def test_exact_pvalue_is_scipys_exact_two_sample_ks(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        a, b = rng.normal(size=n), rng.normal(0.3, 1.2, size=n)
        k = dist.ks_statistic(a, b)
        reference = scipy.stats.ks_2samp(a, b, method="exact")
        assert k / n == pytest.approx(reference.statistic)
        assert dist.ks_pvalue(n, k) == pytest.approx(reference.pvalue, rel=1e-9)


def test_pvalue_bounds():
    assert dist.ks_pvalue(64, 0) == 1.0
    assert dist.ks_pvalue(64, 64) == pytest.approx(2 / scipy.special.comb(128, 64))
    assert dist.ks_pvalue(64, 20) < dist.ks_pvalue(64, 10) < 1.0


@settings(max_examples=40)
@given(
    values=st.lists(
        st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40
    ).flatmap(
        lambda v: st.tuples(
            st.just(v),
            st.lists(
                st.floats(-1e3, 1e3, allow_nan=False), min_size=len(v), max_size=len(v)
            ),
            st.lists(st.floats(-1, 1), min_size=len(v), max_size=len(v)),
        )
    ),
    tol=st.floats(0, 10),
)
def test_perturbations_within_tol_never_raise_the_statistic(values, tol):
    before, after, shift = (np.asarray(v, np.float64) for v in values)
    moved = after + shift * tol  # every value moved by at most tol
    assert dist.ks_statistic(before, moved, tol) <= dist.ks_statistic(before, after)


@settings(max_examples=30)
@given(
    atoms=st.integers(1, 8),  # 1..7 atoms: heavy ties; 8: continuous
    seed=st.integers(0, 2**32 - 1),
    jitter=st.booleans(),
)
@example(atoms=8, seed=0, jitter=False)
@example(atoms=2, seed=0, jitter=True)
def test_false_alarm_rate_is_at_most_the_level(atoms, seed, jitter):
    """Two samples of one distribution (continuous, or few atoms: ties), optionally
    each value moved by rounding below tol: at level 0.05 the test rejects at most
    5% of 400 replicate pairs (up to a 4-sigma binomial margin: 37 of 400)."""
    rng = np.random.default_rng(seed)
    n, replicates, tol = 32, 400, 1e-6
    support = rng.normal(size=atoms)

    def draw():
        x = rng.normal(size=n) if atoms == 8 else rng.choice(support, size=n)
        return x + (rng.uniform(-tol, tol, size=n) if jitter else 0.0)

    rejected = sum(
        dist.loss_sample(draw(), draw(), tol=tol).p <= 0.05 for _ in range(replicates)
    )
    assert rejected <= 37


def test_statistic_and_assertion_reject_bad_arguments():
    with pytest.raises(ValueError, match="one size"):
        dist.ks_statistic(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="tol must be >= 0"):
        dist.ks_statistic(np.zeros(3), np.zeros(3), -1.0)
    with pytest.raises(ValueError, match="need n >= 1"):
        dist.ks_pvalue(4, 5)
    sample = dist.loss_sample(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="alpha must be in"):
        dist.assert_loss_distribution_matches_before([sample], alpha=0.0)
    with pytest.raises(ValueError, match="examples must be >= len"):
        dist.assert_loss_distribution_matches_before([sample, sample], examples=1)


def test_assertion_names_the_example_and_both_distributions():
    rng = np.random.default_rng(0)
    same = dist.loss_sample(rng.normal(size=64), rng.normal(size=64))
    spread = dist.loss_sample(rng.normal(size=64), 0.05 * rng.normal(size=64))
    hc.assert_loss_distribution_matches_before([same, same])
    with pytest.raises(
        AssertionError,
        match=error_regex(INVARIANT, "example 2 of 2", "exact p =", "after: median"),
    ):
        hc.assert_loss_distribution_matches_before([same, spread])
    # The level is shared by the examples: p = 1e-5 fails among 2 examples
    # (level 5e-4), not when judged alone against the 1000-example level (1e-6).
    weak = same._replace(p=1e-5)
    with pytest.raises(AssertionError, match="0.001/2"):
        hc.assert_loss_distribution_matches_before([weak, same])
    hc.assert_loss_distribution_matches_before([weak], examples=dist.MAX_EXAMPLES)


def test_non_finite_losses_count_as_the_largest_values():
    finite = np.arange(8.0)
    assert dist.ks_statistic(finite, finite) == 0
    with_nan = np.where(finite > 5, np.nan, finite)
    assert dist.ks_statistic(finite, with_nan) == 2  # 6 and 7 became +inf
    assert dist.ks_statistic(with_nan, with_nan) == 0
    assert dist.ks_statistic(finite, np.full(8, np.nan)) == 8


@pytest.fixture(scope="module")
def dropout_subject():
    case = dropout_migration("migrate-dropout")
    return case, case.subject(case.init(jax.random.PRNGKey(0)))


@settings(max_examples=25)
@given(data=st.data())
def test_a_correct_stochastic_migration_passes_every_example(dropout_subject, data):
    """The exact migration's losses over keys agree on every example drawn: no
    example's p-value reaches the level at which one example fails alone."""
    case, subject = dropout_subject
    e = data.draw(case.examples())
    sample = dist.sample_losses(subject, e)
    assert sample.p >= dist.ALPHA / dist.MAX_EXAMPLES, sample
    # The same example draws the same keys (a derandomized run is reproducible).
    assert dist.sample_losses(subject, e).k == sample.k


def test_a_side_without_reseed_is_not_applicable(dropout_subject):
    case, _ = dropout_subject
    no_reseed = dataclasses.replace(
        case, after=dataclasses.replace(case.after, reseed=None)
    )
    report = hc.verify(no_reseed, profile="dev", invariants=[INVARIANT])
    (result,) = report.cases[0].results
    assert result.status == NOT_APPLICABLE, report.table()
    assert "no reseed on the after side" in result.message


def test_the_verdict_and_its_note_on_the_built_in_migration(dropout_subject):
    case, _ = dropout_subject
    report = hc.verify(case, profile="dev", invariants=[INVARIANT])
    (result,) = report.cases[0].results
    assert result.status == HELD, report.table()
    assert result.examples >= 8  # its minimum: the level is shared by examples
    assert "agree in distribution on all" in result.message


@pytest.mark.parametrize(
    "mutant",
    [m for m in dropout_mutants() if m.caught_by == INVARIANT],
    ids=lambda m: m.name,
)
def test_stochastic_bugs_leave_the_deterministic_model_exact(mutant):
    """Each bug is invisible with dropout off; only the distribution sees it."""
    report = hc.verify(
        mutant.make(),
        profile="dev",
        invariants=["loss_matches_before", "step_matches_before", INVARIANT],
        shrink_seconds=0,
    )
    results = {r.invariant: r for r in report.cases[0].results}
    assert results["loss_matches_before"].status == HELD, report.table()
    assert results["step_matches_before"].status == HELD, report.table()
    assert results[INVARIANT].status == FAILED, report.table()
    assert "Kolmogorov-Smirnov distance" in results[INVARIANT].message


def test_sample_losses_names_the_sides_without_reseed(dropout_subject):
    case, subject = dropout_subject
    rng = np.random.default_rng(0)
    x, y = (rng.normal(size=(4, 4)).astype(np.float32) for _ in range(2))
    e = Example(case.init(jax.random.PRNGKey(0)), (x, y, jax.random.PRNGKey(1)), 0.1)
    deterministic = dataclasses.replace(subject, stochastic=None)  # eval sides only
    with pytest.raises(InvariantNotApplicable, match="neither side declares"):
        dist.sample_losses(deterministic, e)
    before, after = subject.stochastic
    no_reseed = dataclasses.replace(before, reseed=None)
    one_sided = dataclasses.replace(subject, stochastic=(no_reseed, after))
    with pytest.raises(
        InvariantNotApplicable,
        match="no reseed on the before side.*training loss .* is not its eval loss",
    ):
        dist.sample_losses(one_sided, e)
