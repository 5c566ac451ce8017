"""A line-by-line transcription of the seed's text, used as the oracle in tests.

Deliberately eager and written the way the seed writes it (``x @ k + b``, closures,
``float(...)``), so that hybridcheck's jitted core is compared against the letter of
the specification, not against itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from hybridcheck import compat
from hybridcheck.compat import nnx


def reference_mixed_train_step(seed, x, y, lr):  # type: ignore[no-untyped-def]
    hidden = 4
    nnx_linear = nnx.Linear(
        in_features=x.shape[-1], out_features=hidden, rngs=nnx.Rngs(int(seed))
    )
    nnx_params = {
        "kernel": compat.variable_array(nnx_linear.kernel),
        "bias": compat.variable_array(nnx_linear.bias),
    }
    linen_dense = nn.Dense(features=int(y.shape[-1]))
    linen_params = linen_dense.init(
        jax.random.PRNGKey(int(seed) + 1), jnp.zeros((hidden,))
    )

    def forward(nnx_params, linen_params, x):  # type: ignore[no-untyped-def]
        h = x @ nnx_params["kernel"] + nnx_params["bias"]
        h = jax.nn.relu(h)
        return linen_dense.apply(linen_params, h)

    def loss_fn(nnx_params, linen_params):  # type: ignore[no-untyped-def]
        return jnp.mean((forward(nnx_params, linen_params, x) - y) ** 2)

    with jax.numpy_rank_promotion("allow"):  # the seed's `+ bias` on batched x
        loss_before = loss_fn(nnx_params, linen_params)
        g_nnx, g_linen = jax.grad(loss_fn, argnums=(0, 1))(nnx_params, linen_params)
        new_nnx = jax.tree_util.tree_map(lambda p, g: p - lr * g, nnx_params, g_nnx)
        new_linen = jax.tree_util.tree_map(
            lambda p, g: p - lr * g, linen_params, g_linen
        )
        loss_after = loss_fn(new_nnx, new_linen)
    return jnp.array([float(loss_before), float(loss_after)])
