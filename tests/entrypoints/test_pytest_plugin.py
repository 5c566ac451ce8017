"""A user's three-line PR gate: one pytest item per invariant per case."""

from __future__ import annotations

GATE = """
from hybridcheck.entrypoints.pytest_plugin import invariant_tests
from hybridcheck.cases.seed import SEED_CASE
test_hybrid = invariant_tests(SEED_CASE, invariants=["update_is_descent", "sgd_update"])
"""

BROKEN_GATE = """
import dataclasses
from hybridcheck.entrypoints.pytest_plugin import invariant_tests
from hybridcheck.cases.seed import SEED_CASE
from hybridcheck.cases.mutants import sign_error_linen
CASE = dataclasses.replace(SEED_CASE, name="mine", step=sign_error_linen)
test_hybrid = invariant_tests(CASE, invariants=["update_is_descent", "all_finite"])
"""


def test_three_line_gate_passes_for_a_correct_case(pytester):
    pytester.makepyfile(test_gate=GATE)
    result = pytester.runpytest("--hybridcheck-profile=dev", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 passed*"])


def test_gate_fails_loudly_naming_the_invariant(pytester):
    pytester.makepyfile(test_gate=BROKEN_GATE)
    result = pytester.runpytest(
        "--hybridcheck-profile=dev", "-v", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_hybrid?mine-update_is_descent? FAILED*", "*half 'linen'*"]
    )


SHARED_GATE = """
import sys

from hybridcheck.entrypoints.pytest_plugin import invariant_tests
from hybridcheck.cases.seed import SEED_CASE

CALLS = []
# the package exports the function under the module's name
VERIFY_MODULE = sys.modules["hybridcheck.engine.verify"]
_real_verify = VERIFY_MODULE.verify


def _counting_verify(*args, **kwargs):
    CALLS.append(kwargs.get("invariants"))
    return _real_verify(*args, **kwargs)


VERIFY_MODULE.verify = _counting_verify

test_hybrid = invariant_tests(
    SEED_CASE, invariants=["update_is_descent", "sgd_update", "all_finite"]
)


def test_zz_one_run_for_the_selected_items():
    VERIFY_MODULE.verify = _real_verify  # pytester runs in this process: undo
    assert CALLS == [["sgd_update", "update_is_descent"]], CALLS
"""


def test_items_of_a_case_share_one_verifier_run(pytester):
    # Two of the case's three items selected with -k: one verify() call, for those
    # two invariants only, serves both.
    pytester.makepyfile(test_gate=SHARED_GATE)
    result = pytester.runpytest(
        "--hybridcheck-profile=dev",
        "-p",
        "no:cacheprovider",
        "-k",
        "update_is_descent or sgd_update or one_run",
    )
    result.assert_outcomes(passed=3, deselected=1)
