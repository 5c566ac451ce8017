"""Case (a): the seed's model and step, plus the three-interop-routes invariant."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from hypothesis import strategies as st

from hybridcheck import compat
from hybridcheck import seed as core
from hybridcheck.compat import nnx
from hybridcheck.describe import strategies as hst
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.invariants import InvariantNotApplicable, fail

IN, OUT = 3, 2


def seed_init(key: jax.Array) -> core.HybridParams:
    seed = jax.random.randint(key, (), 0, core.MAX_SEED)
    return core.init_params(seed, IN, OUT)


def seed_step(params: core.HybridParams, batch: Any, lr: Any) -> core.HybridParams:
    """hybridcheck's own seed step (``train_step``) as a HybridCase step."""
    x, y = batch
    return core.train_step(params, x, y, lr).params


@st.composite
def seed_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    lead = draw(st.sampled_from([(), (4,), (8,)]))
    x = draw(hst.bounded_arrays((*lead, IN)))
    y = draw(hst.bounded_arrays((*lead, OUT)))
    return x, y


# --- the three interop routes --------------------------------------------------


class _BridgeModel(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.linear = nnx.Linear(IN, core.HIDDEN, rngs=rngs)
        from flax.nnx import bridge

        self.dense = bridge.ToNNX(nn.Dense(OUT), rngs=rngs)

    def __call__(self, x: Any, rngs: Any) -> Any:
        # rngs are created inside the differentiated function and passed in: the
        # wrapper's own streams, closed over, raise TraceContextError on Flax >= 0.11.
        return self.dense(jax.nn.relu(self.linear(x)), rngs=rngs)


def _split_merge_route(params: core.HybridParams, x: Any, y: Any) -> Any:
    linear = nnx.Linear(IN, core.HIDDEN, rngs=nnx.Rngs(0))

    def loss(p_nnx: Any, p_linen: Any) -> Any:
        hidden = jax.nn.relu(compat.module_with_params(linear, p_nnx)(x))
        return jnp.mean((nn.Dense(OUT).apply(p_linen, hidden) - y) ** 2)

    return jax.value_and_grad(loss, argnums=(0, 1))(params.nnx, params.linen)


def _bridge_route(params: core.HybridParams, x: Any, y: Any) -> Any:
    model = _BridgeModel(nnx.Rngs(0))
    compat.bridge_lazy_init(model, jnp.zeros((1, IN)), nnx.Rngs(0))
    layout = compat.params_as_dict(model)["dense"]
    nested = "params" in layout  # the bridge's layout moved between releases

    def to_bridge(p_linen: Any) -> Any:
        return p_linen if nested else p_linen["params"]

    def loss(p_nnx: Any, p_linen: Any) -> Any:
        merged = compat.module_with_params(
            model, {"linear": p_nnx, "dense": to_bridge(p_linen)}
        )
        return jnp.mean((merged(x, nnx.Rngs(0)) - y) ** 2)

    return jax.value_and_grad(loss, argnums=(0, 1))(params.nnx, params.linen)


def assert_routes_agree(params: core.HybridParams, batch: Any, lr: float) -> None:
    """Manual dict, nnx.split/merge and bridge routes: same loss, same gradients."""
    if not compat.HAS_BRIDGE:
        raise InvariantNotApplicable(compat.feature_support()["bridge"])
    x, y = (jnp.asarray(a) for a in batch)
    manual = (core.loss(params, x, y), tuple(core.grads(params, x, y)))
    problems = []
    for route, (value, grads) in (
        ("split/merge", _split_merge_route(params, x, y)),
        ("bridge.ToNNX", _bridge_route(params, x, y)),
    ):
        if not np.allclose(value, manual[0], rtol=1e-5, atol=1e-6):
            problems.append(
                f"{route}: loss {float(value):.8g} vs manual {float(manual[0]):.8g}"
            )
        for half, got, want in zip(("nnx", "linen"), grads, manual[1], strict=True):
            for (path, a), b in zip(
                jax.tree_util.tree_flatten_with_path(got)[0],
                jax.tree.leaves(want),
                strict=True,
            ):
                if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
                    diff = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    problems.append(
                        f"{route}: half '{half}' leaf {jax.tree_util.keystr(path)}: "
                        f"max |diff| {diff:.3g}"
                    )
    fail(
        "routes_agree",
        problems,
        "Given the same weights, every interop route must compute the same function. "
        "A mismatch means a route maps parameters to the wrong place (layout moved "
        "between releases) or drops a variable.",
    )


SEED_CASE = HybridCase(
    name="seed",
    init=seed_init,
    loss=core.batch_loss,
    batches=seed_batches(),
    step=seed_step,
    sgd=True,
    extra_checks={"routes_agree": assert_routes_agree},
    description="the founding problem: nnx.Linear (as a dict) -> ReLU -> Linen Dense",
)
