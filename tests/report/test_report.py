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


def test_table_reads_top_down():
    text = report(
        InvariantResult("sgd_update", HELD, examples=10, skipped_examples=2),
        InvariantResult(
            "all_finite", FAILED, examples=1, message="[hybridcheck] all_finite: x"
        ),
        InvariantResult("deterministic", NOT_APPLICABLE, message="no devices"),
    ).table()
    lines = text.splitlines()
    # the verdict and the failed invariants first, then the cause, then the table
    assert lines[0] == (
        "hybridcheck: FAILED (exit 1): 1 failed on case 'mine': all_finite"
    )
    assert lines[1].startswith(
        "3 invariant results on 1 case: 2 ran (1 held, 1 failed)"
    )
    assert text.index("── mine / all_finite FAILED ──") < text.index("10 (+2 n/a)")
    assert "[hybridcheck] all_finite: x" in text
    # n/a collapsed into one section after the table, grouped by reason
    assert (
        "1 invariant results did not apply:\n  mine: deterministic: no devices" in text
    )
    assert lines[-1].startswith("verdict: FAILED (exit 1).")


def test_verdicts_and_exit_codes():
    held = InvariantResult("sgd_update", HELD, examples=3)
    never = InvariantResult("sgd_update", HELD, examples=0)
    na = InvariantResult("roundtrip", NOT_APPLICABLE, message="no invert")
    assert (report(held).verdict, report(held).exit_code) == ("passed", 0)
    assert (report(never).verdict, report(never).exit_code) == ("nothing ran", 3)
    assert report(na).exit_code == 3
    assert "none of its 1 selected invariants applied" in report(na).table()
    selected = report(held, na)
    selected.selected = ["roundtrip"]
    assert selected.exit_code == 3
    assert "--invariant roundtrip applied to no case: no invert" in selected.table()
    aborted = report(held)
    aborted.aborted = "user code called sys.exit(0)"
    assert (aborted.verdict, aborted.exit_code) == ("aborted", 4)
    timed = Report([CaseReport("mine", [held], timed_out="budget")], "dev", VERSIONS)
    assert (timed.verdict, timed.exit_code) == ("timed out", 5)


def test_failures_sharing_leaves_are_one_block():
    def failure(name, line):
        return InvariantResult(
            name, FAILED, message=f"[hybridcheck] {name}:\n  - {line}"
        )

    text = report(
        failure("update_is_descent", "half 'nnx' leaf ['w']: did not move"),
        failure("sgd_update", "half 'nnx' leaf ['w'][0, 1]: 0 vs -0.1"),
        failure("all_finite", "half 'linen' leaf ['b']: nan"),
    ).table()
    assert "2 invariants FAILED on one cause" in text
    assert "failed: update_is_descent, sgd_update" in text
    assert "  sgd_update: half 'nnx' leaf ['w'][0, 1]: 0 vs -0.1" in text
    assert "── mine / all_finite FAILED ──" in text
    assert text.count("[hybridcheck] update_is_descent") == 1


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
    assert "<details open><summary>mine / all_finite FAILED</summary>" in text
