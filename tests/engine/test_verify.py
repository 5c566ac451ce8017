"""verify(): built-in cases pass, every mutant is rejected by the invariant naming
its bug, user errors become reported failures, misuse raises."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import time
from typing import Any

import numpy as np
import pytest

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.cases import builtin_cases, mutant_cases
from hybridcheck.cases.mutants import MUTANTS
from hybridcheck.cases.seed import SEED_CASE
from hybridcheck.invariants import registry
from hybridcheck.report.results import FAILED, HELD, NOT_APPLICABLE


def test_seed_case_holds_every_invariant():
    # Every built-in case under every invariant is the main job, `nox -s verify`,
    # which CI runs in full; here the seed case exercises the whole pipeline.
    report = hc.verify(SEED_CASE, profile="dev")
    assert report.ok, report.table()
    (case,) = report.cases
    statuses = {r.invariant: r.status for r in case.results}
    steps = {n: inv for n, inv in registry.REGISTRY.items() if inv.kind == "step"}
    assert set(statuses) == set(steps) | {"routes_agree"}
    # Every invariant ran on real examples (the seed step is plain SGD and the
    # conftest forces 4 devices), except those needing a field the seed case does
    # not set (state_fn, reseed, tx): those are n/a, saying so.
    optional = {n for n, inv in steps.items() if inv.needs_field}
    if not compat.HAS_BRIDGE:  # routes_agree compares against bridge.ToNNX (0.9+)
        optional.add("routes_agree")
    assert all(statuses[n] == HELD for n in statuses if n not in optional), statuses
    assert all(statuses[n] == NOT_APPLICABLE for n in optional), statuses
    assert all(r.examples > 0 for r in case.results if r.invariant not in optional)
    assert 0 < case.traces <= case.shape_buckets, case


def test_builtin_cases_cover_the_migration_shapes():
    names = {c.name for c in builtin_cases()}
    assert {"seed", "nnx-mlp->linen-head", "linen-embed->nnx-attention"} <= names
    assert "batchnorm+dropout" in names


def test_one_search_shares_runs_across_invariants():
    # One Hypothesis search per case: the jitted step is traced once per shape
    # bucket even though eight invariants use its result on every example.
    report = hc.verify(
        SEED_CASE,
        profile="dev",
        invariants=[
            "grads_match_params",
            "update_changes_exactly_graded_leaves",
            "update_is_descent",
            "sgd_update",
            "all_finite",
            "retrace_budget",
            "deterministic",
            "jit_matches_eager",
        ],
    )
    assert report.ok, report.table()
    (case,) = report.cases
    assert case.traces == case.shape_buckets
    # Every example reached every invariant once: run, n/a, or left out of a sample.
    counts = {
        r.invariant: r.examples + r.skipped_examples + r.not_sampled
        for r in case.results
    }
    assert len(set(counts.values())) == 1, counts


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


def test_failures_are_shrunk():
    # lr_squared fails first-order on every example with a gradient; Hypothesis
    # shrinks towards the simplest one: the unbatched shape bucket, seed 0.
    (case,) = [c for c in mutant_cases() if c.name == "mutant-lr_squared"]
    report = hc.verify(case, profile="dev", invariants=["loss_decrease_first_order"])
    (result,) = report.cases[0].results
    assert result.status == FAILED
    assert "not shrunk" not in result.counterexample
    # Shrunk to the first shape bucket, an unbatched x (rank 1: no nested rows).
    assert re.search(r"batch: \[0\] float32\[\d+\] ", result.counterexample), (
        result.counterexample
    )
    # what was drawn, never the parameter arrays
    assert "Array(" not in result.counterexample
    assert result.counterexample.endswith("(shrunk)")


def test_a_crashing_step_is_a_reported_failure_not_a_crash():
    def exploding_step(params, batch, lr):
        raise RuntimeError("boom in user code")

    case = dataclasses.replace(SEED_CASE, name="explodes", step=exploding_step)
    report = hc.verify(
        case, profile="dev", invariants=["update_is_descent"], shrink_seconds=0
    )
    (result,) = report.cases[0].results
    assert result.status == FAILED
    assert "RuntimeError: boom in user code" in result.message
    # shrink_seconds=0: the first failing example, reported as it was found.
    assert result.counterexample.endswith(
        "(first failing example; not shrunk: shrink_seconds=0)"
    )
    # the user's line, not hybridcheck's frames
    assert "test_verify.py" in result.message
    assert "hybridcheck/engine" not in result.message


def test_a_crashing_init_is_reported():
    def bad_init(key):
        raise ValueError("cannot build model")

    case = dataclasses.replace(SEED_CASE, name="bad-init", init=bad_init)
    report = hc.verify(case, profile="dev")
    assert not report.ok
    assert "cannot build model" in report.cases[0].error
    assert "bad-init: could not run" in report.table()
    assert report.exit_code == 1


def test_non_sgd_step_reports_sgd_invariants_not_applicable():
    from hybridcheck.cases import mlp

    report = hc.verify(mlp.CASE, profile="dev", invariants=["sgd_update"])
    (result,) = report.cases[0].results
    assert result.status == NOT_APPLICABLE
    assert "not plain SGD" in result.message


def _twin(name: str = "seed") -> hc.HybridCase:
    return dataclasses.replace(SEED_CASE, name=name, description="another")


NAN, INF = float("nan"), float("inf")
# hc.verify's arguments, refused before anything runs: (arguments, error, a regex on
# the argument named and the fix or the value).
VERIFY_MISUSE: list[tuple[dict[str, Any], type, str]] = [
    ({"cases": None}, TypeError, r"^cases must be .*got NoneType None; pass the case"),
    ({"cases": 3}, TypeError, r"^cases must be .*got int 3"),
    ({"cases": "seed"}, TypeError, r"^cases must be .*got str 'seed'"),
    ({"cases": [object()]}, TypeError, r"^cases must be .*list holding object"),
    ({"cases": [SEED_CASE, None]}, TypeError, r"^cases must be .*holding NoneType"),
    ({"cases": []}, ValueError, r"^cases is empty"),
    ({"cases": [SEED_CASE, SEED_CASE]}, ValueError, r"same case 'seed' more than once"),
    (
        {"cases": [SEED_CASE, _twin()]},
        ValueError,
        r"two cases with the same name 'seed'",
    ),
    ({"profile": "fast"}, ValueError, r"^profile must be one of .*got str 'fast'"),
    ({"profile": None}, ValueError, r"^profile must be one of"),
    ({"profile": ["dev"]}, ValueError, r"^profile must be one of"),
    ({"invariants": "all_finite"}, TypeError, r"write invariants=\['all_finite'\]"),
    ({"invariants": []}, ValueError, r"^invariants is empty: .*None for every"),
    ({"invariants": [3]}, TypeError, r"^invariants must hold invariant names"),
    ({"invariants": 3}, TypeError, r"^invariants must be a list"),
    ({"invariants": ["nope"]}, ValueError, r"unknown invariants \['nope'\]"),
    ({"progress": "yes"}, TypeError, r"^progress must be a function .*str 'yes'"),
    ({"progress": True}, TypeError, r"^progress must be a function"),
    ({"shrink_seconds": -1.0}, ValueError, r"^shrink_seconds must be .* >= 0"),
    ({"shrink_seconds": "10"}, TypeError, r"^shrink_seconds must be a number"),
    ({"shrink_seconds": NAN}, ValueError, r"^shrink_seconds must be a finite"),
    ({"shrink_seconds": True}, TypeError, r"^shrink_seconds must be a number"),
    ({"timeout": -1}, ValueError, r"^timeout must be a finite .*None: no limit"),
    ({"timeout": 0}, ValueError, r"^timeout must be a finite"),
    ({"timeout": NAN}, ValueError, r"^timeout must be a finite"),
    ({"timeout": INF}, ValueError, r"^timeout must be a finite .*got inf"),
    ({"timeout": "10"}, TypeError, r"^timeout must be a number"),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    VERIFY_MISUSE,
    ids=[f"{next(iter(k))}-{i}" for i, (k, _, _) in enumerate(VERIFY_MISUSE)],
)
def test_verify_misuse(kwargs, error, match):
    arguments = {"cases": SEED_CASE, "profile": "dev", **kwargs}
    with pytest.raises(error, match=match) as caught:
        hc.verify(**arguments)
    assert "\n" not in str(caught.value)


def test_an_extra_check_is_a_known_invariant():
    report = hc.verify(SEED_CASE, profile="dev", invariants=("routes_agree",))
    assert [r.invariant for r in report.cases[0].results] == ["routes_agree"]


def test_a_failure_says_whose_code_raised():
    def exploding_loss(params, batch):
        raise ZeroDivisionError("in the loss")

    case = dataclasses.replace(SEED_CASE, name="bad-loss", loss=exploding_loss)
    report = hc.verify(
        case, profile="dev", invariants=["grads_match_params"], shrink_seconds=0
    )
    (result,) = report.cases[0].results
    assert result.status == FAILED
    assert "[bad-loss] the user's loss raised ZeroDivisionError: in the loss" in (
        result.message
    )


def test_a_hanging_step_is_reported_within_its_budget():
    import time

    def hangs(params, batch, lr):
        while True:  # a step that never returns (in Python)
            time.sleep(0.01)

    case = dataclasses.replace(SEED_CASE, name="hangs", step=hangs, extra_checks={})
    start = time.perf_counter()
    report = hc.verify(
        case,
        profile="dev",
        invariants=["update_is_descent", "all_finite"],
        timeout=2.0,
        shrink_seconds=0,
    )
    assert time.perf_counter() - start < 30
    results = {r.invariant: r for r in report.cases[0].results}
    timed_out = report.cases[0].timed_out
    # the call that did not return, named as itself, not as an invariant's failure
    assert "the case's 2 s budget (--timeout) ran out: the user's step did not " in (
        timed_out
    )
    assert "example: lr=" in timed_out
    assert results["update_is_descent"].status == NOT_APPLICABLE
    assert "not finished" in results["update_is_descent"].message
    assert results["all_finite"].status == NOT_APPLICABLE
    assert "not run" in results["all_finite"].message
    assert (report.verdict, report.exit_code) == ("timed out", 5)


def test_ctrl_c_returns_the_partial_report():
    def interrupted(params, batch, lr):
        os.kill(os.getpid(), signal.SIGINT)  # a person pressing Ctrl-C
        time.sleep(5)  # the signal arrives at once; never reached

    cases = [
        dataclasses.replace(SEED_CASE, name="first", extra_checks={}),
        dataclasses.replace(SEED_CASE, name="second", step=interrupted),
        dataclasses.replace(SEED_CASE, name="never-run"),
    ]
    report = hc.verify(cases, profile="dev", invariants=["all_finite"])
    assert report.interrupted == "interrupted (Ctrl-C)"
    assert [c.case for c in report.cases] == ["first", "second"]
    assert report.cases[0].results[0].status == HELD
    assert not report.ok
    assert "INTERRUPTED" in report.table()
    assert report.exit_code == 130


@pytest.mark.parametrize(
    ("ending", "said"),
    [
        (lambda: sys.exit(0), "called sys.exit(0)"),
        (lambda: os._exit(0), "called os._exit(0)"),
        (lambda: (_ for _ in ()).throw(KeyboardInterrupt), "raised KeyboardInterrupt"),
        (lambda: (_ for _ in ()).throw(GeneratorExit), "raised GeneratorExit"),
    ],
    ids=["sys.exit", "os._exit", "KeyboardInterrupt", "BaseException"],
)
def test_user_code_ending_the_run_aborts_it(ending, said):
    def ends(params, batch, lr):
        ending()

    cases = [
        dataclasses.replace(SEED_CASE, name="ends", step=ends),
        dataclasses.replace(SEED_CASE, name="never-run"),
    ]
    report = hc.verify(cases, profile="dev", invariants=["all_finite"])
    assert (report.verdict, report.exit_code) == ("aborted", 4)
    assert said in report.aborted
    assert "test_verify.py" in report.aborted  # the user's line
    assert [c.case for c in report.cases] == ["ends"]
    assert report.table().splitlines()[0].startswith("hybridcheck: ABORTED (exit 4)")


# Under ci (a sample of examples for the expensive invariants) every mutant of every
# kind is still rejected: tests/cases/test_mutants_ci.py.


def test_expensive_invariants_run_on_a_sample_and_say_so():
    report = hc.verify(
        SEED_CASE,
        profile="ci",
        invariants=["grads_match_finite_differences", "all_finite"],
    )
    results = {r.invariant: r for r in report.cases[0].results}
    sampled, full = results["grads_match_finite_differences"], results["all_finite"]
    assert full.examples == hc.PROFILES["ci"].examples
    assert full.not_sampled == 0
    sample = hc.PROFILES["ci"].sample
    assert sample is not None
    assert sampled.examples + sampled.skipped_examples <= sample + 12  # + buckets
    assert sampled.not_sampled > 0
    assert "sampled:" in sampled.examples_text()


def test_a_sample_counts_verdicts_and_stops_trying_where_nothing_applies():
    from hybridcheck.engine import search as _search

    tally = _search.Tally()
    assert tally.wants("bucket-a", 2)  # the first example of a bucket, always
    tally.na_reasons.append("n/a")
    # n/a examples are no evidence: it keeps trying for 2 verdicts ...
    assert tally.wants("bucket-a", 2)
    tally.examples += 1
    tally.na_reasons += ["n/a"] * (_search.NA_FACTOR * 2 - 3)
    assert tally.wants("bucket-a", 2)
    tally.na_reasons.append("n/a")
    # ... but not forever
    assert not tally.wants("bucket-a", 2)
    assert tally.wants("bucket-b", 2)  # a new shape bucket is always seen
    assert _search.Tally().wants("bucket-a", None)  # no sample: every example


def test_a_step_mutating_its_batch_is_caught_whichever_invariant_runs_it_first():
    # The seed's batches are NumPy arrays: run op by op (the eager run that
    # jit_matches_eager makes before inputs_unchanged's turn), this step adds to x
    # in place. The snapshot taken before any invariant ran still shows it.
    from hybridcheck.cases.seed import seed_step

    def mutating_step(params, batch, lr):
        x = batch[0]
        if isinstance(x, np.ndarray):
            x += 1.0
        return seed_step(params, batch, lr)

    case = dataclasses.replace(SEED_CASE, name="mutates", step=mutating_step)
    report = hc.verify(
        case,
        profile="dev",
        invariants=["jit_matches_eager", "inputs_unchanged"],
        shrink_seconds=0,
    )
    results = {r.invariant: r for r in report.cases[0].results}
    assert results["inputs_unchanged"].status == FAILED, report.table()
    assert "value changed during the step" in results["inputs_unchanged"].message


@pytest.mark.parametrize("name", ["deterministic", "inputs_unchanged"])
def test_a_structural_invariant_stops_at_enough_examples(name):
    # What it catches does not depend on the values drawn: past `enough` verdicts
    # the ci profile's sample of 25 adds nothing (see Invariant.enough).
    inv = registry.REGISTRY[name]
    assert inv.enough is not None
    assert inv.enough < 25
    report = hc.verify(SEED_CASE, profile="ci", invariants=[name])
    (case,) = report.cases
    (result,) = case.results
    assert result.status == HELD, report.table()
    # the first example of each shape bucket always runs, then up to `enough`
    assert 1 <= result.examples <= inv.enough + case.shape_buckets
    assert result.examples < 25
