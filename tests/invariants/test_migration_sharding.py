"""sharding_matches_before: partitioning traced through the converter, the mesh step."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.cases import migrations
from hybridcheck.describe import specs as _partitioning
from hybridcheck.invariants import InvariantNotApplicable, error_regex
from hybridcheck.invariants import _mesh as sharding
from hybridcheck.invariants.migration.sharding import Placement, placements
from hybridcheck.invariants.registry import REGISTRY, static_not_applicable
from hybridcheck.report.results import NOT_APPLICABLE

BEFORE = {"w": jnp.arange(8.0).reshape(2, 4), "b": jnp.ones(4)}
SPECS = [("['b']", P("model")), ("['w']", P(None, "model"))]  # leaf order: b, w


def trace(convert, after_specs, before_specs=SPECS):
    with compat.enable_x64():
        return placements(convert, BEFORE, before_specs, after_specs)


def misplaced(found):
    return {p.path: (p.misplaced, p.expected) for p in found if p.misplaced}


def test_transposed_array_with_transposed_names_keeps_its_placement():
    def convert(p):
        return {"k": p["w"].T, "b": p["b"]}

    ok = trace(convert, [("['b']", P("model")), ("['k']", P("model", None))])
    assert misplaced(ok) == {}
    bad = trace(convert, [("['b']", P("model")), ("['k']", P(None, "model"))])
    assert misplaced(bad) == {"['k']": (4, P("model", None))}


def test_a_merged_axis_keeps_the_placement_of_its_major_part():
    specs = [("['b']", P()), ("['w']", P("model", None))]

    def flat(p):
        return {"k": p["w"].reshape(8), "b": p["b"]}

    assert misplaced(trace(flat, [("['b']", P()), ("['k']", P("model"))], specs)) == {}
    # Sharding the minor part of a merged axis is no spec of the merged array.
    minor = [("['b']", P()), ("['w']", P(None, "model"))]
    (wrong,) = [
        p
        for p in trace(flat, [("['b']", P()), ("['k']", P("model"))], minor)
        if p.misplaced
    ]
    assert wrong.path == "['k']"
    assert wrong.expected is None
    assert wrong.sources == (f"['w'] {P(None, 'model')}",)


def test_a_converter_that_mixes_elements_is_not_applicable():
    with pytest.raises(InvariantNotApplicable, match="not a plain copy"):
        trace(lambda p: {"k": p["w"] * 2.0, "b": p["b"]}, SPECS[:1] + [("['k']", P())])


def test_assertion_names_leaf_specs_and_source_and_the_mesh_step():
    placement = Placement(
        "['nnx']['k']", P(None, "model"), P("model", None), ("['w'] P",), 4, 8
    )
    with pytest.raises(
        AssertionError,
        match=error_regex(
            "sharding_matches_before",
            "after leaf ['nnx']['k']: partitioned",
            f"expected {P('model', None)}",
            "4 of 8 elements",
            "nnx.with_partitioning",
        ),
    ):
        hc.assert_sharding_matches_before([placement])
    hc.assert_sharding_matches_before([placement._replace(misplaced=0)])
    single = {"k": jnp.ones(3)}
    hc.assert_sharding_matches_before([], single, {"k": jnp.ones(3) * (1 + 1e-14)})
    with pytest.raises(
        AssertionError,
        match=error_regex("sharding_matches_before", "mesh step leaf ['k']"),
    ):
        hc.assert_sharding_matches_before([], single, {"k": jnp.ones(3) * 1.001})
    with pytest.raises(ValueError, match="both single and sharded"):
        hc.assert_sharding_matches_before([], single)


def test_specs_are_validated_against_the_params():
    where = "MigrationCase('x').after_specs"
    rules = (("heads", "model"),)
    got = _partitioning.resolve_specs(
        {"w": ("embed", "heads"), "b": None}, BEFORE, rules, where
    )
    assert got == [("['b']", P()), ("['w']", P(None, "model"))]
    assert _partitioning.resolve_specs(
        lambda p: {"w": None, "b": None}, BEFORE, None, where
    )
    with pytest.raises(ValueError, match=r"after_specs must have the structure"):
        _partitioning.resolve_specs({"w": None}, BEFORE, None, where)
    with pytest.raises(TypeError, match=r"after_specs: the spec of \['w'\]"):
        _partitioning.resolve_specs({"w": 3, "b": None}, BEFORE, None, where)
    with pytest.raises(ValueError, match="more entries than dimensions"):
        _partitioning.resolve_specs(
            {"w": ("a", "b", "c"), "b": None}, BEFORE, None, where
        )
    (base,) = [c for c in migrations.cases() if c.name == "migrate-partitioned"]
    with pytest.raises(TypeError, match=r"MigrationCase\('x'\)\.axis_rules"):
        dataclasses.replace(base, name="x", axis_rules=["heads"])  # type: ignore[list-item]


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 forced host devices")
def test_run_partitioned_places_each_leaf_on_the_mesh():
    mesh = sharding.device_mesh(["data", "model", "extra"])
    assert dict(mesh.shape) == {"data": 2, "model": 2, "extra": 1}
    out = sharding.run_partitioned(
        jax.jit(lambda p, x: {"w": p["w"] * x, "b": p["b"]}),
        BEFORE,
        [P("model"), P(None, "model")],
        mesh,
        2.0,
    )
    assert out["w"].sharding.spec == P(None, "model")
    assert len(out["w"].sharding.device_set) == 4
    np.testing.assert_array_equal(out["w"], BEFORE["w"] * 2.0)


def test_not_applicable_without_declared_partitioning_or_devices(monkeypatch):
    (embed,) = [c for c in migrations.cases() if c.name == "migrate-embed"]
    report = hc.verify(embed, profile="dev", invariants=["sharding_matches_before"])
    (result,) = report.cases[0].results
    assert result.status == NOT_APPLICABLE
    assert "neither side declares any partitioning" in result.message
    subject = embed.subject(embed.init(jax.random.PRNGKey(0)))
    monkeypatch.setattr(jax, "devices", lambda: jax.local_devices()[:1])
    reason = static_not_applicable(REGISTRY["sharding_matches_before"], subject)
    assert reason is not None
    assert "only 1 device" in reason
