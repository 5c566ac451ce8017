"""Shared fixtures for the hybridcheck test suite."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import hybridcheck as hc


@pytest.fixture
def seed_example() -> tuple[float, jnp.ndarray, jnp.ndarray, float]:
    """The seed problem's own kind of input: float seed, 1-D x and y, float lr."""
    return 0.0, jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 0.0]), 0.1


@pytest.fixture
def seed_params() -> hc.HybridParams:
    return hc.init_params(0, 3, 2)


pytest_plugins = ["pytester"]
