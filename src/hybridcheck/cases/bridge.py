"""Case (e): the Flax bridge wrappers, both directions.

* ``bridge.ToNNX``: a Linen ``Dense`` head inside an NNX model.
* ``bridge.to_linen``: an NNX ``Linear`` encoder inside a Linen model.
Both need Flax >= 0.9.0; on older releases they are reported as not applicable.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from hypothesis import strategies as st

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.describe import strategies as hst
from hybridcheck.describe.hybrid_case import HybridCase

IN, WIDTH, OUT = 3, 6, 2


@st.composite
def batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.sampled_from([4, 8]))
    return (
        draw(hst.bounded_arrays((n, IN), max_magnitude=5.0)),
        draw(hst.bounded_arrays((n, OUT), max_magnitude=5.0)),
    )


def _cases() -> list[HybridCase]:
    from flax.nnx import bridge

    class NnxWithLinenHead(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.encoder = nnx.Linear(IN, WIDTH, rngs=rngs)
            self.head = bridge.ToNNX(nn.Dense(OUT), rngs=rngs)

        def __call__(self, x: Any, rngs: Any) -> Any:
            return self.head(jnp.tanh(self.encoder(x)), rngs=rngs)

    def make(key: jax.Array) -> Any:
        model = NnxWithLinenHead(nnx.Rngs(key))
        compat.bridge_lazy_init(model, jnp.zeros((1, IN)), nnx.Rngs(key))
        return model

    template = make(jax.random.PRNGKey(0))

    def to_nnx_init(key: jax.Array) -> dict[str, Any]:
        params = compat.params_as_dict(make(key))
        return {"nnx": params["encoder"], "linen": params["head"]}

    def to_nnx_loss(params: dict[str, Any], batch: Any) -> Any:
        x, y = batch
        model = compat.module_with_params(
            template, {"encoder": params["nnx"], "head": params["linen"]}
        )
        # A fresh Rngs inside the differentiated function (see COMPAT notes).
        return jnp.mean((model(x, nnx.Rngs(0)) - y) ** 2)

    class LinenWithNnxEncoder(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            h = bridge.to_linen(nnx.Linear, IN, WIDTH, name="encoder")(x)
            return nn.Dense(OUT, name="head")(jnp.tanh(h))

    linen_model = LinenWithNnxEncoder()
    static = compat.linen_static_collections(
        linen_model.init(jax.random.PRNGKey(0), jnp.zeros((1, IN)))
    )

    def to_linen_init(key: jax.Array) -> dict[str, Any]:
        params = compat.linen_trainable(linen_model.init(key, jnp.zeros((1, IN))))
        return {"nnx": params["encoder"], "linen": params["head"]}

    def to_linen_loss(params: dict[str, Any], batch: Any) -> Any:
        x, y = batch
        variables = {
            **static,
            "params": {"encoder": params["nnx"], "head": params["linen"]},
        }
        return jnp.mean((linen_model.apply(variables, x) - y) ** 2)

    return [
        HybridCase(
            name="bridge-ToNNX",
            init=to_nnx_init,
            loss=to_nnx_loss,
            batches=batches(),
            description="NNX model with a Linen Dense head wrapped in bridge.ToNNX",
        ),
        HybridCase(
            name="bridge-to_linen",
            init=to_linen_init,
            loss=to_linen_loss,
            batches=batches(),
            description="Linen model with an NNX Linear encoder wrapped by to_linen",
        ),
    ]


def cases() -> list[HybridCase]:
    """The bridge cases, or none where the release has no bridge (see --list)."""
    return _cases() if compat.HAS_BRIDGE else []
