"""HybridCase: half labels, the drawn examples (field checks: test_fields.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings

import hybridcheck as hc
from hybridcheck.describe.subject import Example


def make(**overrides):
    fields = {
        "name": "mine",
        "init": lambda k: (jnp.ones(1), jnp.ones(1)),
        "loss": lambda p, b: jnp.sum(p[0] * p[1]) * b,
        "batches": lambda k: jax.random.uniform(k),
    }
    return hc.HybridCase(**{**fields, **overrides})


# Each field's check at construction: tests/describe/test_fields.py.


def test_labels_come_from_the_container_or_halves():
    assert make().labels((1, 2)) == ("half0", "half1")
    assert make(halves=("nnx", "linen")).labels((1, 2)) == ("nnx", "linen")
    assert make().labels({"a": 1, "b": 2}) == ("a", "b")
    with pytest.raises(ValueError, match=r"HybridCase\('mine'\).*labels name 3"):
        make(halves=("a", "b", "c")).labels((1, 2))
    with pytest.raises(ValueError, match=r"non_trainable names \['c'\]"):
        make(step=lambda p, b, lr: p, non_trainable=("c",)).labels({"a": 1, "b": 2})
    with pytest.raises(TypeError, match=r"HybridCase\('mine'\).*got Array"):
        make().labels(jnp.ones(2))


def test_a_single_half_is_reported_as_a_case_error():
    one_half = make(init=lambda k: (jnp.ones(1),))
    report = hc.verify(one_half, profile="dev")
    assert "at least two" in report.cases[0].error
    assert "HybridCase('mine')" in report.cases[0].error


def test_examples_reuse_cached_inits_and_draw_lrs_in_range():
    calls = []

    def init(key):
        calls.append(key)
        return (jnp.ones(1), jnp.ones(1))

    case = make(init=init, param_seeds=2, lr=0.05)

    @settings(max_examples=20, database=None, derandomize=True)
    @given(example=case.examples())
    def run(example):
        assert isinstance(example, Example)
        assert example.lr == 0.05

    run()
    assert 1 <= len(calls) <= 2  # at most one init per param seed


def test_subject_takes_the_case_name_and_sgd_default():
    subject = make().subject((jnp.ones(1), jnp.ones(1)))
    assert subject.name == "mine"
    assert subject.sgd  # no step given: the library's SGD step
    assert not make(step=lambda p, b, lr: p).subject((1, 2)).sgd
