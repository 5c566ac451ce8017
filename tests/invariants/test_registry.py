"""The registry: one name per invariant, from assert_<name> to the README's table."""

from __future__ import annotations

import functools
import pathlib
import re

import pytest

import hybridcheck as hc
from hybridcheck import invariants
from hybridcheck.cases.seed import SEED_CASE
from hybridcheck.invariants import registry
from hybridcheck.report.results import HELD

README = pathlib.Path(__file__).parents[2] / "README.md"


def readme_invariant_table() -> dict[str, tuple[str, str]]:
    """``{name: (catches, cost)}`` from the README's table."""
    text = README.read_text()
    section = text.split("## The invariants", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `(\w+)` \| (.*) \| (.*?) \|$", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def readme_table_problems() -> list[str]:
    """How the README's invariant table differs from the registry (empty: none)."""
    table = readme_invariant_table()
    problems = [
        f"{n}: not in the README's table" for n in registry.REGISTRY if n not in table
    ]
    problems += [
        f"{n}: in the README's table, not registered"
        for n in table
        if n not in registry.REGISTRY
    ]
    if not problems and list(table) != list(registry.REGISTRY):
        problems.append("the README's rows are not in the registry's (report) order")
    for name, inv in registry.REGISTRY.items():
        if name in table and table[name] != (inv.catches, registry.cost_text(inv)):
            problems.append(
                f"{name}: README row differs from {registry.readme_row(inv)}"
            )
    return problems


def test_readme_table_lists_exactly_the_registry():
    assert readme_table_problems() == []


def test_readme_describes_every_cost_unit():
    text = README.read_text()
    for unit, meaning in registry.COSTS.items():
        assert f"`{unit}`: {meaning}" in text, unit


def test_expensive_invariants_are_sampled_and_cheap_ones_are_not():
    for inv in registry.REGISTRY.values():
        assert inv.sampled == bool(registry.EXPENSIVE & set(inv.cost)), inv.name
    assert registry.REGISTRY["grads_match_finite_differences"].sampled
    assert not registry.REGISTRY["sgd_update"].sampled
    # a verdict taken across examples asks for enough of them
    assert registry.REGISTRY["loss_matches_before"].convincing > 1


def test_invariant_cost_is_validated():
    with pytest.raises(ValueError, match="cost names unknown units"):
        registry.Invariant("x", "y", lambda s, e: None, cost=("gpu-hours",))
    with pytest.raises(ValueError, match="convincing must be an int >= 1"):
        registry.Invariant("x", "y", lambda s, e: None, convincing=0)
    with pytest.raises(ValueError, match=r"enough must be None or an int >= conv"):
        registry.Invariant("x", "y", lambda s, e: None, convincing=8, enough=5)


def test_a_sampled_invariant_runs_on_its_sample_floored_and_capped():
    row = functools.partial(registry.Invariant, "x", "y", lambda s, e: None)
    assert row().target(25) == 25
    assert row().target(None) is None  # every example
    assert row(convincing=8).target(3) == 8  # a verdict across examples
    assert row(enough=5).target(25) == 5  # more would add no evidence
    assert row(enough=5).target(3) == 3
    assert row(enough=5).target(None) is None
    assert "<= 5 examples" in registry.cost_text(row(cost=("eager",), enough=5))


def test_every_registered_invariant_has_its_assertion():
    for name in registry.REGISTRY:
        assert callable(getattr(invariants, f"assert_{name}")), name
        assert callable(getattr(hc, f"assert_{name}")), name


def test_gradient_reach_alone_needs_no_other_check():
    report = hc.verify(
        SEED_CASE, profile="dev", invariants=["every_half_gets_gradient"]
    )
    (result,) = report.cases[0].results
    assert result.status == HELD, report.table()
    assert result.examples > 0


def test_a_step_returning_another_structure_is_reported_as_that():
    import dataclasses

    from hybridcheck.cases.seed import seed_step
    from hybridcheck.report.results import FAILED

    def rewrapped(params, batch, lr):  # the Linen half wrapped in 'params' twice
        new = seed_step(params, batch, lr)
        return new._replace(linen={"params": new.linen})

    case = dataclasses.replace(SEED_CASE, name="rewrapped", step=rewrapped)
    report = hc.verify(
        case,
        profile="dev",
        invariants=["grads_match_params", "update_is_descent"],
        shrink_seconds=0,
    )
    results = {r.invariant: r for r in report.cases[0].results}
    for name in ("grads_match_params", "update_is_descent"):
        assert results[name].status == FAILED
        # named as the step's return, with the half, once for both invariants
        assert "the user's step returned new params with another tree structure " in (
            results[name].message
        )
        assert "(half 'linen': PyTreeDef({'params': {'params': {" in (
            results[name].message
        )
    assert results["grads_match_params"].cause == results["update_is_descent"].cause
