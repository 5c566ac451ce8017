"""Migration equivalence: built-in migrations hold, semantic bugs fail by name,
reorderings of the same math pass, and the verdict across examples is rounding-aware."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hybridcheck as hc
from hybridcheck.cases import migrations
from hybridcheck.invariants import error_regex
from hybridcheck.invariants import migration as mig
from hybridcheck.invariants.migration import _update
from hybridcheck.invariants.registry import REGISTRY
from hybridcheck.report.results import FAILED, HELD

MIGRATION_INVARIANTS = [n for n, inv in REGISTRY.items() if inv.kind == "migration"]


@pytest.mark.parametrize(
    "case", migrations.cases() + migrations.reorderings(), ids=lambda c: c.name
)
def test_exact_migrations_and_reorderings_hold_every_invariant(case):
    report = hc.verify(case, profile="dev", shrink_seconds=0)
    assert report.ok, report.table()
    statuses = {r.invariant: r.status for r in report.cases[0].results}
    assert set(statuses) == set(MIGRATION_INVARIANTS)
    # roundtrip is n/a only where the case gives no inverse, sharding_matches_before
    # only where neither side declares partitioning.
    optional = {
        "roundtrip": case.invert is not None,
        "sharding_matches_before": bool(case.before_specs or case.after_specs),
        "loss_distribution_matches_before": case.before_eval is not None,
    }
    assert all(s == HELD for n, s in statuses.items() if optional.get(n, True)), (
        statuses
    )


@pytest.mark.parametrize("mutant", migrations.mutants(), ids=lambda m: m.name)
def test_semantic_bug_is_rejected_by_the_invariant_naming_it(mutant):
    report = hc.verify(
        mutant.make(), profile="dev", invariants=[mutant.caught_by], shrink_seconds=0
    )
    (result,) = report.cases[0].results
    assert result.status == FAILED, report.table()
    assert result.message.startswith(f"[hybridcheck] {mutant.caught_by}:")


def dev(units, sign=1, what="loss"):
    return mig.Deviation(what, 1e-6 * units, units, sign)


def test_rounding_like_deviations_pass():
    # About the float32 noise, either sign: what float32-internal ops give.
    examples = [[dev(0.8, s)] for s in (1, -1, 1, -1, 1, -1, 1, 1, -1, 1)]
    examples += [[dev(1.3, 1)], [dev(0.0, 0)]]
    mig.assert_loss_matches_before(examples)


@pytest.mark.parametrize(
    ("examples", "part"),
    [
        ([[dev(17.0)]], "over the 16x limit"),
        ([[dev(3.0, s)] for s in (1, -1, 1, -1, 1, -1)], "systematic deviation"),
        ([[dev(0.5, -1)] for _ in range(8)], "same direction (-)"),
    ],
    ids=["hard-limit", "most-examples-above-noise", "one-direction"],
)
def test_systematic_deviations_fail(examples, part):
    with pytest.raises(
        AssertionError, match=error_regex("loss_matches_before", "loss", part)
    ):
        mig.assert_loss_matches_before(examples)


def test_deviation_is_zero_for_the_same_math_and_floors_the_noise():
    same = mig.deviation("x", jnp.ones(3), jnp.ones(3) * (1 + 1e-13), jnp.ones(3))
    assert same.units == 0.0
    # before32 == before64 by chance: the noise is floored at one float32 rounding.
    d = mig.deviation("x", jnp.ones(3), jnp.ones(3) * (1 + 1e-6), jnp.ones(3))
    assert 0 < d.units < 10
    assert d.sign == 1


def test_convert_coverage_and_roundtrip_name_the_leaf():
    with pytest.raises(
        AssertionError,
        match=error_regex("convert_covers_every_param", "before leaf ['b']", "1 of 2"),
    ):
        mig.assert_convert_covers_every_param(
            {"a": jnp.array([True]), "b": jnp.array([True, False])},
            {"w": jnp.array([True, True, True])},
        )
    with pytest.raises(AssertionError, match=error_regex("roundtrip", "leaf ['w']")):
        mig.assert_roundtrip({"w": jnp.ones(2)}, {"w": jnp.ones(2) * 2})
    mig.assert_roundtrip({"w": jnp.ones(2)}, {"w": jnp.ones(2)})


def test_migration_case_validates_its_fields():
    (base,) = [c for c in migrations.cases() if c.name == "migrate-embed"]
    with pytest.raises(TypeError, match=r"MigrationCase\('x'\)\.before"):
        dataclasses.replace(base, name="x", before=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"MigrationCase\('x'\)\.convert"):
        dataclasses.replace(base, name="x", convert=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"MigrationCase\('x'\)\.steps"):
        dataclasses.replace(base, name="x", steps=0)


def test_a_converter_that_raises_is_a_case_error():
    (base,) = [c for c in migrations.cases() if c.name == "migrate-embed"]

    def broken(p):
        raise KeyError("embed")

    report = hc.verify(dataclasses.replace(base, convert=broken), profile="dev")
    assert "convert raised on the before model's params" in report.cases[0].error


def test_stochastic_layers_are_compared_deterministic_and_the_report_says_so():
    (case,) = [c for c in migrations.cases() if c.name == "migrate-dropout"]
    report = hc.verify(
        case, profile="dev", invariants=["loss_matches_before"], shrink_seconds=0
    )
    (result,) = report.cases[0].results
    assert result.status == HELD, report.table()
    # Linen and NNX draw different masks from the same key: only the deterministic
    # comparison can hold, and the note must say that it is what was compared.
    assert "compared with the stochastic layers off" in result.message
    assert "consume the random key differently" in result.message
    assert result.message in report.table()  # the note reaches the report


def test_eval_sides_come_in_pairs():
    (case,) = [c for c in migrations.cases() if c.name == "migrate-dropout"]
    with pytest.raises(ValueError, match="set both before_eval and after_eval"):
        dataclasses.replace(case, after_eval=None)
    with pytest.raises(TypeError, match=r"\.before_eval must be a HybridCase"):
        dataclasses.replace(case, before_eval="eval")  # type: ignore[arg-type]


def test_integer_leaves_are_compared_by_what_each_side_keeps():
    one, two, zero = jnp.array(1), jnp.array(2), jnp.array(0)
    assert _update.compare_exactly("c", zero, one, one, rng=False) is None
    # both sides advance it: a counter both keep, compared exactly
    both = _update.compare_exactly("c", zero, one, two, rng=False)
    assert isinstance(both, mig.Deviation)
    assert both.exact == (
        "from 0, the original's step leaves it at 1 (converted), the migrated step at 2"
    )
    # only one side advances it: no counterpart, not compared
    for want, got, who in ((zero, one, "migrated"), (one, zero, "original")):
        found = _update.compare_exactly("c", zero, want, got, rng=False)
        assert isinstance(found, _update.NotCompared)
        assert found.reason.startswith(f"only the {who} step advances it")
    # RNG state (an rng half, or a typed key) is never compared across frameworks
    assert isinstance(
        _update.compare_exactly("c", zero, one, two, rng=True), _update.NotCompared
    )
    keys = [jax.random.key(i) for i in range(3)]
    typed = _update.compare_exactly("k", *keys, rng=False)
    assert isinstance(typed, _update.NotCompared)
    assert "RNG state" in typed.reason


def test_an_integer_mismatch_is_reported_in_its_own_values():
    counter = mig.Deviation("update ['opt']['step']", np.inf, np.inf, 0, exact="1 vs 2")
    with pytest.raises(AssertionError) as caught:
        mig.assert_step_matches_before([[counter, dev(0.5, what="update w")]])
    message = str(caught.value)
    assert "integer leaf, compared exactly: 1 vs 2 (1 of 1 examples differ)" in message
    assert mig.INTEGER_HINT in message
    assert "float32 noise" not in message
    assert "BatchNorm" not in message
    # with a float failure beside it: both problems, both hints
    with pytest.raises(
        AssertionError,
        match="(?s)update w: worst 20x.*compared exactly: 1 vs 2.*BatchNorm.*Integer",
    ):
        mig.assert_step_matches_before([[counter, dev(20.0, what="update w")]])


def test_not_compared_leaves_are_listed_once_each():
    skipped = [
        _update.NotCompared("update a", "only the migrated step advances it"),
        _update.NotCompared("update a", "only the migrated step advances it (again)"),
        _update.NotCompared("update b", "RNG state"),
    ]
    assert _update.not_compared_note(skipped) == (
        "not compared: update a: only the migrated step advances it; "
        "not compared: update b: RNG state"
    )
    assert _update.not_compared_note([]) == ""
