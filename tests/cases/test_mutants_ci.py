"""Under the PR gate's profile (ci: expensive invariants on a sample) every library
mutant of every kind is still rejected by the invariant that names its bug.

The dev-profile versions of these checks live beside each kind of mutant
(test_verify, test_checks_training, test_guide_cases, test_migration); this file is
the cost model's proof that sampling loses no power (a ci search per mutant, each
stopping at its first failure: ~25 s for all of them with two workers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

import hybridcheck as hc
from hybridcheck.cases import guide, migrations, mutant_cases
from hybridcheck.cases.mutants import CASE_MUTANTS, MUTANTS
from hybridcheck.report.results import FAILED


def _every_mutant() -> list[tuple[str, Callable[[], Any], str]]:
    step = [
        (m.name, functools.partial(lambda c: c, case), m.caught_by)
        for m, case in zip(MUTANTS, mutant_cases(), strict=True)
    ]
    made = [
        (m.name, m.make, m.caught_by)
        for m in (*CASE_MUTANTS, *guide.mutants(), *migrations.mutants())
    ]
    return step + made


EVERY = _every_mutant()


@pytest.mark.parametrize(
    ("name", "case", "caught_by"), EVERY, ids=[m[0] for m in EVERY]
)
def test_mutant_is_rejected_under_ci(
    name: str, case: Callable[[], Any], caught_by: str
) -> None:
    report = hc.verify(case(), profile="ci", invariants=[caught_by], shrink_seconds=0)
    (result,) = report.cases[0].results
    assert result.status == FAILED, f"{name}:\n{report.table()}"
    assert result.message.startswith(f"[hybridcheck] {caught_by}:"), result.message
