"""verify(): built-in cases pass, every mutant is rejected by the invariant naming
its bug, user errors become reported failures, misuse raises."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import pytest

import hybridcheck as hc
from hybridcheck.cases import builtin_cases, mutant_cases
from hybridcheck.cases.seed import SEED_CASE
from hybridcheck.mutants import MUTANTS
from hybridcheck.verify import FAILED, HELD, NOT_APPLICABLE


def test_builtin_cases_all_hold():
    report = hc.verify(builtin_cases(), profile="dev")
    assert report.ok, report.table()
    names = {c.case for c in report.cases}
    assert {"seed", "nnx-mlp->linen-head", "linen-embed->nnx-attention"} <= names
    assert "batchnorm+dropout" in names
    for case in report.cases:
        statuses = {r.invariant: r.status for r in case.results}
        # The core invariants actually ran (not n/a) on every case.
        for name in (
            "grads_match_params",
            "update_is_descent",
            "jit_matches_eager",
            "deterministic",
            "every_half_gets_gradient",
        ):
            assert statuses[name] == HELD, (case.case, name, statuses[name])
        assert case.traces <= case.shape_buckets, case
    seed = next(c for c in report.cases if c.case == "seed")
    assert {r.invariant: r.status for r in seed.results}["routes_agree"] == HELD


@pytest.mark.parametrize(
    ("case", "mutant"),
    list(zip(mutant_cases(), MUTANTS, strict=True)),
    ids=[m.name for m in MUTANTS],
)
def test_gate_rejects_each_mutant_with_the_right_invariant(case, mutant):
    report = hc.verify(case, profile="dev", invariants=[mutant.caught_by])
    (result,) = report.cases[0].results
    assert result.status == FAILED, report.table()
    assert result.message.startswith(f"[hybridcheck] {mutant.caught_by}:")
    assert result.counterexample  # the shrunk example is reported
    assert not report.ok


def test_a_crashing_step_is_a_reported_failure_not_a_crash():
    def exploding_step(params, batch, lr):
        raise RuntimeError("boom in user code")

    case = dataclasses.replace(SEED_CASE, name="explodes", step=exploding_step)
    report = hc.verify(case, profile="dev", invariants=["update_is_descent"])
    (result,) = report.cases[0].results
    assert result.status == FAILED
    assert "RuntimeError: boom in user code" in result.message


def test_a_crashing_init_is_reported():
    def bad_init(key):
        raise ValueError("cannot build model")

    case = dataclasses.replace(SEED_CASE, name="bad-init", init=bad_init)
    report = hc.verify(case, profile="dev")
    assert not report.ok
    assert "cannot build model" in report.cases[0].error
    assert "could not be set up" in report.table()


def test_non_sgd_step_reports_sgd_invariants_not_applicable():
    from hybridcheck.cases import mlp

    report = hc.verify(mlp.CASE, profile="dev", invariants=["sgd_update"])
    (result,) = report.cases[0].results
    assert result.status == NOT_APPLICABLE
    assert "not plain SGD" in result.message


def test_report_json_round_trips():
    report = hc.verify(SEED_CASE, profile="dev", invariants=["all_finite"])
    data = json.loads(report.to_json())
    assert data["ok"] is True
    assert data["cases"][0]["results"][0]["invariant"] == "all_finite"
    assert data["versions"]["flax"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"profile": "fast"}, ValueError, "profile must be one of"),
        ({"invariants": ["nope"]}, ValueError, "unknown invariants"),
    ],
)
def test_verify_misuse(kwargs, error, match):
    with pytest.raises(error, match=match):
        hc.verify(SEED_CASE, **kwargs)


def test_verify_rejects_non_cases():
    with pytest.raises(TypeError, match="HybridCase objects"):
        hc.verify([object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="cases is empty"):
        hc.verify([])


def test_hybrid_case_validates_its_fields():
    with pytest.raises(TypeError, match="init must be callable"):
        hc.HybridCase(
            name="x",
            init=None,  # type: ignore[arg-type]
            loss=lambda p, b: 0.0,
            batches=lambda k: k,
        )
    with pytest.raises(ValueError, match="no step"):
        hc.HybridCase(
            name="x",
            init=lambda k: (jnp.ones(1), jnp.ones(1)),
            loss=lambda p, b: 0.0,
            batches=lambda k: k,
            non_trainable=("half1",),
        )
    one_half = hc.HybridCase(
        name="x",
        init=lambda k: (jnp.ones(1),),
        loss=lambda p, b: 0.0,
        batches=lambda k: k,
    )
    report = hc.verify(one_half, profile="dev")
    assert "at least two" in report.cases[0].error
