"""The seed's model and step as a :class:`hybridcheck.checks.Subject`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from hybridcheck import step as core
from hybridcheck.checks import Example, Subject
from hybridcheck.mutants import correct_step
from hybridcheck.strategies import SeedExample

__all__ = ["seed_loss", "seed_subject", "seed_example_to_check"]


def seed_loss(params: core.HybridParams, batch: Any) -> Any:
    """The seed's MSE loss with the batch as one argument: ``batch = (x, y)``."""
    x, y = batch
    return core.loss(params, x, y)


def seed_subject(step: Callable[..., Any] = correct_step, **kwargs: Any) -> Subject:
    """A fresh Subject (fresh trace counter) for the seed model and ``step``."""
    return Subject(loss=seed_loss, step=step, halves=("nnx", "linen"), **kwargs)


def seed_example_to_check(example: SeedExample) -> Example:
    """Turns drawn seed inputs into an Example: params from ``init_params(seed)``."""
    params = core.init_params(example.seed, example.x.shape[-1], example.y.shape[-1])
    return Example(params, (jnp.asarray(example.x), jnp.asarray(example.y)), example.lr)
