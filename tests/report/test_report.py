"""The report: verdict, table and JSON from invariant results."""

from __future__ import annotations

import json

import junitparser

from hybridcheck.report.results import (
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
    assert "3 invariant results on 1 case(s): 1 failed. jax 0.10.2, flax 0.12.8" in text


def test_json_round_trips():
    result = InvariantResult("all_finite", FAILED, message="m", counterexample="c")
    data = json.loads(report(result).to_json())
    assert data["ok"] is False
    assert data["versions"] == VERSIONS
    assert data["cases"][0]["results"][0] == result.to_dict()


def test_junit_reads_back_with_junitparser(tmp_path):
    path = tmp_path / "report.xml"
    path.write_text(
        report(
            InvariantResult("sgd_update", HELD, examples=10, seconds=1.5),
            InvariantResult("all_finite", FAILED, message="[hybridcheck] x\n  - y"),
            InvariantResult("deterministic", NOT_APPLICABLE, message="no devices"),
        ).to_junit()
    )
    xml = junitparser.JUnitXml.fromfile(str(path))
    (suite,) = list(xml)
    assert suite.name == "mine"
    assert (suite.tests, suite.failures, suite.skipped, suite.errors) == (3, 1, 1, 0)
    cases = {c.name: c for c in suite}
    assert cases["sgd_update"].is_passed
    (failure,) = cases["all_finite"].result
    assert failure.message == "[hybridcheck] x"
    assert "counterexample" in failure.text
    assert cases["deterministic"].is_skipped


def test_junit_reports_a_case_error():
    text = report(error="init raised").to_junit()
    assert 'errors="1"' in text
    assert "init raised" in text


def test_markdown_table_and_failure_details():
    text = report(
        InvariantResult("sgd_update", HELD, examples=10),
        InvariantResult("all_finite", FAILED, message="[hybridcheck] all_finite: x"),
    ).to_markdown()
    assert text.startswith("### hybridcheck: FAILED")
    assert "| mine | `sgd_update` | ✅ held | 10 |" in text
    assert "<details><summary>mine / all_finite</summary>" in text
