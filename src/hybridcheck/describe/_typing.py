"""Type aliases shared across hybridcheck."""

from __future__ import annotations

from typing import Any, TypeAlias

import jax

PyTree: TypeAlias = Any
"""Any JAX pytree (nested dicts/lists/tuples/NamedTuples of arrays)."""

Params: TypeAlias = Any
"""One half's trainable parameters: a pytree of arrays (``{'kernel': ..., ...}``)."""

Array: TypeAlias = jax.Array
ArrayLike: TypeAlias = Any
