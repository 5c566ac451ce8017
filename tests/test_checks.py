"""The registry: one name per invariant, from assert_<name> to the README's table."""

from __future__ import annotations

import pathlib
import re

import hybridcheck as hc
from hybridcheck import checks, invariants
from hybridcheck.cases.seed import SEED_CASE
from hybridcheck.report import HELD

README = pathlib.Path(__file__).parents[1] / "README.md"


def readme_invariant_table() -> dict[str, str]:
    text = README.read_text()
    section = text.split("## The invariants", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `(\w+)` \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_readme_table_lists_exactly_the_registry():
    table = readme_invariant_table()
    assert list(table) == list(checks.REGISTRY)
    for name, inv in checks.REGISTRY.items():
        assert table[name] == inv.catches, name


def test_every_registered_invariant_has_its_assertion():
    for name in checks.REGISTRY:
        assert callable(getattr(invariants, f"assert_{name}")), name
        assert callable(getattr(hc, f"assert_{name}")), name


def test_gradient_reach_alone_needs_no_other_check():
    report = hc.verify(
        SEED_CASE, profile="dev", invariants=["every_half_gets_gradient"]
    )
    (result,) = report.cases[0].results
    assert result.status == HELD, report.table()
    assert result.examples > 0
