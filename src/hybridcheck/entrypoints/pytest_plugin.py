"""pytest integration: gate a migration PR from your own test suite.

In a test file of yours (three lines)::

    from hybridcheck.entrypoints.pytest_plugin import invariant_tests
    from mymodel.hybrid import CASE
    test_hybrid = invariant_tests(CASE)

pytest then shows one test per invariant per case
(``test_hybrid[my-case-update_is_descent]``), failing with hybridcheck's message and
the shrunk counterexample; an invariant that does not apply is a skip with the reason.
``--hybridcheck-profile=dev|ci|thorough`` picks the number of examples (default: ci).

The items of one case share one verifier run (one Hypothesis search, one compile per
shape), made by the first of them for every invariant of that case that pytest
selected (``-k`` included); the others read their verdict from it.

This module is loaded by pytest at start-up (entry point ``pytest11``), so it must
not touch JAX's backends at import: conftest files may still set ``XLA_FLAGS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from hybridcheck.engine.profiles import PROFILES

__all__ = ["invariant_tests"]

_PROFILE_KEY = pytest.StashKey[str]()
# id(case) -> invariant names selected for it; id(case) -> its report (one per run).
_SELECTED_KEY = pytest.StashKey[dict[int, list[str]]]()
_REPORTS_KEY = pytest.StashKey[dict[int, Any]]()
_MARK = "_hybridcheck_invariant_test"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hybridcheck")
    group.addoption(
        "--hybridcheck-profile",
        choices=list(PROFILES),
        default="ci",
        help="examples per case for invariant_tests (hybridcheck.PROFILES; default ci)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_PROFILE_KEY] = config.getoption("--hybridcheck-profile", "ci")
    config.stash[_SELECTED_KEY] = {}
    config.stash[_REPORTS_KEY] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Records, per case, which of its invariants are about to run."""
    selected = session.config.stash[_SELECTED_KEY]
    for item in session.items:
        if not getattr(getattr(item, "function", None), _MARK, False):
            continue
        params = item.callspec.params  # type: ignore[attr-defined]
        names = selected.setdefault(id(params["hybrid_case"]), [])
        if params["invariant"] not in names:
            names.append(params["invariant"])


def _report_for(config: pytest.Config, case: Any, invariant: str) -> Any:
    """The case's shared report, made on first use; extends it if ``invariant``
    was not in the selection (an item run outside normal collection)."""
    from hybridcheck.engine.verify import verify

    reports = config.stash.get(_REPORTS_KEY, {})
    report = reports.get(id(case))
    if report is not None and any(
        r.invariant == invariant for r in report.cases[0].results
    ):
        return report
    only = list(config.stash.get(_SELECTED_KEY, {}).get(id(case), []))
    if invariant not in only:
        only.append(invariant)
    profile = config.stash.get(_PROFILE_KEY, "ci")
    report = verify(case, profile=profile, invariants=sorted(set(only)))
    reports[id(case)] = report
    return report


def invariant_tests(
    cases: Any, *, invariants: Iterable[str] | None = None
) -> Callable[..., None]:
    """Returns a parametrized pytest test: one item per (case, invariant).

    Args:
      cases: a HybridCase or a list of them.
      invariants: only these invariant names (default: every one).
    """
    from hybridcheck.describe.hybrid_case import HybridCase
    from hybridcheck.describe.migration_case import MigrationCase
    from hybridcheck.engine.verify import known_invariants

    kinds = (HybridCase, MigrationCase)
    case_list = [cases] if isinstance(cases, kinds) else list(cases)
    if not case_list or not all(isinstance(c, kinds) for c in case_list):
        bad = next((c for c in case_list if not isinstance(c, kinds)), None)
        raise TypeError(
            "invariant_tests takes a HybridCase or MigrationCase or a non-empty list "
            "of them, got "
            f"{type(cases).__name__}"
            + (f" holding a {type(bad).__name__}" if bad is not None else "")
        )
    wanted = None if invariants is None else set(invariants)
    params = [
        pytest.param(case, name, id=f"{case.name}-{name}")
        for case in case_list
        for name in known_invariants([case])
        if wanted is None or name in wanted
    ]

    @pytest.mark.parametrize(("hybrid_case", "invariant"), params)
    def test(hybrid_case: Any, invariant: str, request: pytest.FixtureRequest) -> None:
        from hybridcheck.report.results import FAILED, NOT_APPLICABLE

        report = _report_for(request.config, hybrid_case, invariant)
        if report.aborted:  # user code tried to end the run: never a skip
            pytest.fail(f"the run was aborted: {report.aborted}", pytrace=False)
        case_report = report.cases[0]
        if case_report.timed_out:
            pytest.fail(f"timed out: {case_report.timed_out}", pytrace=False)
        if case_report.error:
            pytest.fail(
                f"case {hybrid_case.name!r} could not be set up:\n{case_report.error}"
            )
        (result,) = [r for r in case_report.results if r.invariant == invariant]
        if result.status == FAILED:
            pytest.fail(
                f"{result.message}\ncounterexample: {result.counterexample}",
                pytrace=False,
            )
        if result.status == NOT_APPLICABLE:
            pytest.skip(f"not applicable: {result.message}")

    setattr(test, _MARK, True)
    return test
