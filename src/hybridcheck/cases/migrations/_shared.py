"""What the built-in migrations share: sizes, the MSE loss, batches of vectors."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from hybridcheck.describe import strategies as hst

D, H, K, W, V, T, C = 4, 2, 2, 6, 7, 3, 3


def mse(out: Any, y: Any) -> Any:
    return jnp.mean((out - y) ** 2)


@st.composite
def vector_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.sampled_from([4, 8]))
    return (
        draw(hst.bounded_arrays((n, D), max_magnitude=3.0)),
        draw(hst.bounded_arrays((n, D), max_magnitude=3.0)),
    )
