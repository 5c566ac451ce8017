"""The bridge-guide families pass every invariant; the bugs users write in them fail.

One ``hc.verify`` per case (dev profile) and one per mutant (its named invariant
only, no shrinking). Families and mutants the installed Flax cannot run are skipped
with the reason ``hybridcheck.cases.guide`` gives.
"""

from __future__ import annotations

import pytest

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.cases import guide
from hybridcheck.cases.mutants import CaseMutant
from hybridcheck.invariants.registry import REGISTRY
from hybridcheck.report.results import FAILED, HELD

pytestmark = pytest.mark.skipif(not compat.HAS_BRIDGE, reason="needs flax.nnx.bridge")

# The training-loop invariants each family must run (held, not n/a): a gate that
# reports them n/a on the models they are for checks nothing.
MUST_HOLD = {
    "to_nnx_dot": {"update_matches_tx", "sgd_update"},
    "to_linen_dot": {"update_matches_tx"},
    "nnx_dropout_bn": {"update_matches_tx", "state_is_threaded", "randomness_is_used"},
    "linen_dropout_bn": {
        "update_matches_tx",
        "state_is_threaded",
        "randomness_is_used",
    },
    "lora": {"update_matches_tx", "every_half_gets_gradient", "sgd_update"},
    "counter": {"update_matches_tx", "state_is_threaded"},
    "to_linen_multi": {"update_matches_tx", "state_is_threaded"},
}
COMMON = {"every_trainable_is_trained", "every_half_gets_gradient", "deterministic"}


def _needs(needs: tuple[int, ...]) -> None:
    if compat.FLAX_VERSION < needs:
        pytest.skip(f"the guide's code needs Flax >= {needs} (see cases/guide/)")


@pytest.mark.parametrize("family", sorted(guide.FAMILIES))
def test_guide_case_passes_every_invariant(family: str) -> None:
    factory, needs = guide.FAMILIES[family]
    _needs(needs)
    case = factory()
    assert case.name == f"guide-{family}"
    report = hc.verify(case, profile="dev")
    assert report.ok, report.table()
    held = {r.invariant for r in report.cases[0].results if r.status == HELD}
    assert MUST_HOLD[family] | COMMON <= held, report.table()


MUTANTS = {m[0]: m for m in guide.BUGS}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_guide_mutant_fails_its_invariant(name: str) -> None:
    _, make, caught_by, _, needs = MUTANTS[name]
    _needs(needs)
    report = hc.verify(make(), profile="dev", invariants=[caught_by], shrink_seconds=0)
    (result,) = report.cases[0].results
    assert result.status == FAILED, report.table()
    # a finding about the model, not an exception from running it
    assert "raised" not in result.message, result.message


def test_cases_and_mutants_match_the_release() -> None:
    cases, mutants = guide.cases(), guide.mutants()
    expected = [
        n for n, (_, needs) in guide.FAMILIES.items() if compat.FLAX_VERSION >= needs
    ]
    assert [c.name for c in cases] == [f"guide-{n}" for n in expected]
    assert all(isinstance(m, CaseMutant) for m in mutants)
    assert {m.name for m in mutants} == {
        f"guide-{n}" for n, *_, needs in guide.BUGS if compat.FLAX_VERSION >= needs
    }
    assert all(m.caught_by in REGISTRY for m in mutants)


def test_no_bridge_no_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "HAS_BRIDGE", False)
    assert guide.cases() == []
    assert guide.mutants() == []


def test_each_family_is_about_thirty_lines_of_user_code() -> None:
    lines = guide.user_code_lines()
    assert set(lines) == set(guide.FAMILIES)
    assert all(n <= 45 for n in lines.values()), lines
