"""Test scaffolding: the seed model and step as a Subject
(hybridcheck.describe.subject)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from hybridcheck import seed as core
from hybridcheck.cases.seed import seed_step
from hybridcheck.describe.strategies import SeedExample
from hybridcheck.describe.subject import Example, Subject

__all__ = ["seed_subject", "seed_example_to_check"]


def seed_subject(step: Callable[..., Any] = seed_step, **kwargs: Any) -> Subject:
    """A fresh Subject (fresh trace counter) for the seed model and ``step``."""
    return Subject(
        loss=core.batch_loss, step=step, halves=("nnx", "linen"), name="seed", **kwargs
    )


def seed_example_to_check(example: SeedExample) -> Example:
    """Turns drawn seed inputs into an Example: params from ``init_params(seed)``."""
    params = core.init_params(example.seed, example.x.shape[-1], example.y.shape[-1])
    return Example(params, (jnp.asarray(example.x), jnp.asarray(example.y)), example.lr)
