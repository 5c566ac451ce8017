"""Hypothesis strategies for hybrid training inputs.

Shapes are drawn from a few buckets (``st.sampled_from``) and only values vary
inside a bucket, so JAX compiles once per bucket rather than once per example.
Values are finite and bounded; learning rates and seeds are plain numbers that the
step receives as traced arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from hybridcheck.describe.validate import MAX_SEED

__all__ = [
    "SeedExample",
    "seeds",
    "learning_rates",
    "feature_sizes",
    "batch_sizes",
    "bounded_arrays",
    "seed_examples",
]

# Every distinct shape costs JAX a compilation of each function under test (jitted,
# eager op by op, float64 replays), so the buckets are the edge cases only: width 1
# and a wider one; unbatched, a batch of one row and a real batch.
DEFAULT_FEATURE_BUCKETS = (1, 3)
DEFAULT_BATCH_BUCKETS: tuple[int | None, ...] = (None, 1, 4)


class SeedExample(NamedTuple):
    """One input of the seed step: ``mixed_train_step(seed, x, y, lr)``."""

    seed: int
    x: np.ndarray
    y: np.ndarray
    lr: float


def _check_buckets(name: str, buckets: Sequence[int | None], allow_none: bool) -> None:
    if not buckets:
        raise InvalidArgument(f"{name} must name at least one size, got {buckets!r}")
    for b in buckets:
        if b is None and allow_none:
            continue
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise InvalidArgument(
                f"{name} must hold positive ints{' or None' if allow_none else ''}, "
                f"got {b!r}; each distinct size costs one JAX compilation"
            )


def seeds(*, min_value: int = 0, max_value: int = MAX_SEED) -> st.SearchStrategy[int]:
    """Seeds the step accepts: integers in ``[min_value, max_value]``."""
    if not 0 <= min_value <= max_value <= MAX_SEED:
        raise InvalidArgument(
            f"need 0 <= min_value <= max_value <= {MAX_SEED}, got "
            f"min_value={min_value}, max_value={max_value}"
        )
    return st.integers(min_value=min_value, max_value=max_value)


def learning_rates(
    *, min_value: float = 1e-4, max_value: float = 0.1
) -> st.SearchStrategy[float]:
    """Positive finite learning rates, spread over orders of magnitude."""
    if not 0 < min_value <= max_value < float("inf"):
        raise InvalidArgument(
            f"need 0 < min_value <= max_value < inf, got {min_value!r}, {max_value!r}"
        )
    lo, hi = np.log10(min_value), np.log10(max_value)
    return st.floats(min_value=float(lo), max_value=float(hi)).map(
        lambda e: float(min(max(10.0**e, min_value), max_value))
    )


def feature_sizes(
    *, buckets: Sequence[int] = DEFAULT_FEATURE_BUCKETS
) -> st.SearchStrategy[int]:
    """A feature width from ``buckets``."""
    _check_buckets("buckets", buckets, allow_none=False)
    return st.sampled_from(tuple(buckets))


def batch_sizes(
    *, buckets: Sequence[int | None] = DEFAULT_BATCH_BUCKETS
) -> st.SearchStrategy[int | None]:
    """A batch size from ``buckets``; ``None`` means an unbatched 1-D example."""
    _check_buckets("buckets", buckets, allow_none=True)
    return st.sampled_from(tuple(buckets))


def bounded_arrays(
    shape: tuple[int, ...], *, max_magnitude: float = 10.0
) -> st.SearchStrategy[np.ndarray]:
    """float32 arrays of ``shape`` with finite values in ``[-max_magnitude, max]``."""
    if not 0 < max_magnitude < 1e18:
        raise InvalidArgument(
            f"max_magnitude must be positive and finite (float32 squares it in the "
            f"loss), got {max_magnitude!r}"
        )
    elements = st.floats(
        min_value=-max_magnitude,
        max_value=max_magnitude,
        width=32,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
    )
    return hnp.arrays(np.float32, shape, elements=elements)


@st.composite
def seed_examples(
    draw: st.DrawFn,
    *,
    in_buckets: Sequence[int] = DEFAULT_FEATURE_BUCKETS,
    out_buckets: Sequence[int] = (1, 2),
    batch_buckets: Sequence[int | None] = DEFAULT_BATCH_BUCKETS,
    max_magnitude: float = 10.0,
    lrs: st.SearchStrategy[float] | None = None,
) -> SeedExample:
    """Inputs for the seed step, with shapes from the buckets.

    The number of distinct shapes (hence compilations) is at most
    ``len(in_buckets) * len(out_buckets) * len(batch_buckets)``.
    """
    in_f = draw(feature_sizes(buckets=in_buckets))
    out_f = draw(feature_sizes(buckets=out_buckets))
    batch = draw(batch_sizes(buckets=batch_buckets))
    lead = () if batch is None else (batch,)
    x = draw(bounded_arrays((*lead, in_f), max_magnitude=max_magnitude))
    y = draw(bounded_arrays((*lead, out_f), max_magnitude=max_magnitude))
    lr = draw(lrs if lrs is not None else learning_rates())
    return SeedExample(seed=draw(seeds()), x=x, y=y, lr=lr)


def shape_bucket_count(
    *,
    in_buckets: Sequence[int] = DEFAULT_FEATURE_BUCKETS,
    out_buckets: Sequence[int] = (1, 2),
    batch_buckets: Sequence[int | None] = DEFAULT_BATCH_BUCKETS,
) -> int:
    """How many distinct input shapes :func:`seed_examples` can produce."""
    return len(set(in_buckets)) * len(set(out_buckets)) * len(set(batch_buckets))
