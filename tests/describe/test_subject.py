"""Subject: gradients over trainable floating leaves only, recorded where computed."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from hybridcheck.describe.subject import Example, Subject


def loss(params, batch):
    return jnp.sum(params["nnx"]["w"] * batch) + jnp.sum(params["linen"]["w"] ** 2)


PARAMS = {
    "nnx": {"w": jnp.array([1.0, 2.0])},
    "linen": {"w": jnp.array([3.0]), "steps": jnp.array(4, jnp.int32)},
    "stats": {"mean": jnp.array([0.5])},
}


def subject(**kwargs):
    return Subject(
        loss=loss,
        step=lambda p, b, lr: p,
        halves=("nnx", "linen", "stats"),
        name="mine",
        non_trainable=("stats",),
        **kwargs,
    )


def test_grads_skip_state_halves_and_integer_leaves():
    s = subject()
    g = s.grads(Example(PARAMS, jnp.array([1.0, -1.0]), 0.1))
    assert set(g) == {"nnx", "linen"}
    np.testing.assert_allclose(g["nnx"]["w"], [1.0, -1.0])
    np.testing.assert_allclose(g["linen"]["w"], [6.0])
    assert g["linen"]["steps"].dtype == jnp.int32
    assert int(g["linen"]["steps"]) == 0


def test_each_gradient_is_recorded_once_where_it_is_computed():
    s = subject()
    e = Example(PARAMS, jnp.array([0.0, 0.0]), 0.1)
    s.grads(e)
    s.grads(e)  # memoized: not recomputed, not recorded twice
    assert s.grads_seen == [{"nnx": {"w": False}, "linen": {"steps": False, "w": True}}]


def test_split_and_join_use_the_case_labels():
    s = Subject(loss=loss, step=lambda p, b, lr: p, halves=("a", "b"), name="mine")
    assert list(s.split((1, 2))) == ["a", "b"]
    assert s.join((1, 2), {"b": 4, "a": 3}) == (3, 4)
    with pytest.raises(TypeError, match="mine: params must hold one pytree per half"):
        s.split(jnp.ones(2))


def test_subject_rejects_non_callables_naming_it():
    with pytest.raises(TypeError, match=r"Subject\('x'\)\.loss and \.step"):
        Subject(loss=None, step=lambda p, b, lr: p, halves=("a", "b"), name="x")  # type: ignore[arg-type]
