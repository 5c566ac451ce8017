"""The Hypothesis strategies produce what they promise, and reject bad arguments."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis.errors import InvalidArgument

from hybridcheck.describe import strategies as hst
from hybridcheck.describe.validate import MAX_SEED, check_batch, check_lr, check_seed


@given(example=hst.seed_examples())
def test_seed_examples_are_valid_step_inputs(example):
    # Everything drawn passes the step's own validation unchanged.
    assert check_seed(example.seed) == example.seed
    assert check_lr(example.lr) == example.lr
    x, y = check_batch(example.x, example.y)
    assert x.shape[-1] in hst.DEFAULT_FEATURE_BUCKETS
    assert x.ndim == y.ndim
    assert np.all(np.abs(x) <= 10.0)
    assert np.all(np.abs(y) <= 10.0)


@given(lr=hst.learning_rates(min_value=1e-3, max_value=1e-2))
def test_learning_rates_in_range(lr):
    assert 1e-3 <= lr <= 1e-2


@given(seed=hst.seeds())
def test_seeds_in_range(seed):
    assert 0 <= seed <= MAX_SEED


def test_bucket_count_matches_defaults():
    assert hst.shape_bucket_count() == 2 * 2 * 3


BAD_BATCH: Any = (2.5,)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: hst.seeds(min_value=-1), "0 <= min_value"),
        (lambda: hst.learning_rates(min_value=0.0), "0 < min_value"),
        (lambda: hst.feature_sizes(buckets=()), "at least one size"),
        (lambda: hst.feature_sizes(buckets=(0,)), "positive ints"),
        (lambda: hst.batch_sizes(buckets=BAD_BATCH), "positive ints or None"),
        (lambda: hst.bounded_arrays((2,), max_magnitude=float("inf")), "finite"),
        (lambda: hst.seed_examples(in_buckets=(True,)), "positive ints"),
    ],
    ids=["seed", "lr", "empty-buckets", "zero-size", "float-batch", "inf-mag", "bool"],
)
def test_bad_arguments_raise_invalid_argument(make, match):
    def draw_one():  # strategies validate eagerly or at first draw: cover both
        given(make())(lambda _value: None)()

    with pytest.raises(InvalidArgument, match=match):
        draw_one()
