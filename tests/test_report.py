"""The report: verdict, table and JSON from invariant results."""

from __future__ import annotations

import json

from hybridcheck.report import (
    FAILED,
    HELD,
    NOT_APPLICABLE,
    CaseReport,
    InvariantResult,
    Report,
)

VERSIONS = {"jax": "0.10.2", "flax": "0.12.8", "backend": "cpu"}


def report(*results, error=""):
    return Report([CaseReport("mine", list(results), error=error)], "dev", VERSIONS)


def test_verdict_is_false_on_a_failure_or_a_case_error():
    held = InvariantResult("sgd_update", HELD, examples=10)
    na = InvariantResult("deterministic", NOT_APPLICABLE, message="why")
    assert report(held, na).ok
    assert not report(held, InvariantResult("all_finite", FAILED)).ok
    assert not report(held, error="init raised").ok


def test_table_shows_counts_failures_and_reasons():
    text = report(
        InvariantResult("sgd_update", HELD, examples=10, skipped_examples=2),
        InvariantResult(
            "all_finite", FAILED, examples=1, message="[hybridcheck] all_finite: x"
        ),
        InvariantResult("deterministic", NOT_APPLICABLE, message="no devices"),
    ).table()
    assert "10 (+2 n/a)" in text
    assert "mine / all_finite FAILED\n[hybridcheck] all_finite: x" in text
    assert "mine / deterministic: not applicable: no devices" in text
    assert "3 checks on 1 case(s): 1 failed. jax 0.10.2, flax 0.12.8" in text


def test_json_round_trips():
    result = InvariantResult("all_finite", FAILED, message="m", counterexample="c")
    data = json.loads(report(result).to_json())
    assert data["ok"] is False
    assert data["versions"] == VERSIONS
    assert data["cases"][0]["results"][0] == result.to_dict()
