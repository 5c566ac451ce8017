"""The same hybrid model trained through each interop route, for the benchmarks.

A model is two stages, one NNX and one Linen, in either order. Every route builds a
jitted SGD step ``step(state, batch, lr) -> (state, loss)`` over the same math:

* ``pure``: hand-written jnp on plain dicts (the floor);
* ``manual``: the seed's route: NNX stage unrolled by hand on its dict, Linen via apply;
* ``split_merge``: NNX stage rebuilt with ``nnx.merge`` inside ``jax.jit``;
* ``nnx_jit``: ``nnx.jit`` + ``nnx.value_and_grad`` on the NNX module itself;
* ``to_nnx``: the Linen stage wrapped in ``bridge.ToNNX`` inside an NNX module;
* ``to_linen``: the NNX stage wrapped by ``bridge.to_linen`` inside a Linen module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.nnx import bridge

from hybridcheck import compat
from hybridcheck.compat import nnx


def _sgd(tree: Any, grads: Any, lr: Any) -> Any:
    return jax.tree.map(lambda p, g: p - lr * g, tree, grads)


def _bias(b: Any, ndim: int) -> Any:
    return jnp.reshape(b, (1,) * (ndim - 1) + (-1,))


# --- model definitions ----------------------------------------------------------


class NnxMLP(nnx.Module):
    def __init__(self, d_in: int, d_out: int, rngs: Any) -> None:
        self.fc = nnx.Linear(d_in, d_out, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return jax.nn.relu(self.fc(x))


def nnx_mlp_pure(p: Any, x: Any) -> Any:
    h = x @ p["fc"]["kernel"]
    return jax.nn.relu(h + _bias(p["fc"]["bias"], h.ndim))


class LinenHead(nn.Module):
    hidden: int
    out: int

    @nn.compact
    def __call__(self, h: Any) -> Any:
        if self.hidden:
            h = jax.nn.relu(nn.Dense(self.hidden)(h))
        return nn.Dense(self.out)(h)


def linen_head_pure(p: Any, h: Any) -> Any:
    layers = sorted(p["params"])
    for i, name in enumerate(layers):
        h = h @ p["params"][name]["kernel"] + _bias(p["params"][name]["bias"], h.ndim)
        if i < len(layers) - 1:
            h = jax.nn.relu(h)
    return h


class NnxBlock(nnx.Module):
    def __init__(self, dim: int, heads: int, vocab: int, rngs: Any) -> None:
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=heads, in_features=dim, decode=False, rngs=rngs
        )
        self.out = nnx.Linear(dim, vocab, rngs=rngs)

    def __call__(self, h: Any) -> Any:
        y = self.norm(h)
        return self.out(h + self.attn(y, y, y))


def nnx_block_pure(p: Any, h: Any) -> Any:
    mean = jnp.mean(h, -1, keepdims=True)
    var = jnp.mean(jnp.square(h - mean), -1, keepdims=True)
    y = (h - mean) * jax.lax.rsqrt(var + 1e-6) * p["norm"]["scale"] + p["norm"]["bias"]
    a = p["attn"]

    def proj(name: str) -> Any:
        return jnp.einsum("btd,dhk->bthk", y, a[name]["kernel"]) + a[name]["bias"]

    q, k, v = proj("query"), proj("key"), proj("value")
    q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    w = jax.nn.softmax(jnp.einsum("bqhk,bshk->bhqs", q, k), axis=-1)
    o = jnp.einsum("bhqs,bshk->bqhk", w, v)
    att = jnp.einsum("bqhk,hkd->bqd", o, a["out"]["kernel"]) + a["out"]["bias"]
    h = h + att
    return h @ p["out"]["kernel"] + p["out"]["bias"]


def embed_pure(p: Any, ids: Any) -> Any:
    return jnp.take(p["params"]["embedding"], ids, axis=0)


@dataclasses.dataclass
class Model:
    """Two stages; ``nnx_first`` says which comes first."""

    name: str
    nnx_first: bool
    make_nnx: Callable[[Any], Any]  # rngs -> nnx module
    nnx_pure: Callable[[Any, Any], Any]
    linen: nn.Module
    linen_pure: Callable[[Any, Any], Any]
    linen_input: Any  # dummy input for Linen init
    batch: Callable[[np.random.Generator], tuple[Any, Any]]
    classify: bool

    def objective(self, out: Any, y: Any) -> Any:
        if self.classify:
            logp = jax.nn.log_softmax(out)
            return -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1))
        return jnp.mean((out - y) ** 2)


def seed_model() -> Model:
    return Model(
        "seed",
        True,
        lambda r: NnxMLP(3, 4, r),
        nnx_mlp_pure,
        LinenHead(0, 2),
        linen_head_pure,
        jnp.zeros((1, 4)),
        lambda g: (
            g.normal(size=(8, 3)).astype(np.float32),
            g.normal(size=(8, 2)).astype(np.float32),
        ),
        classify=False,
    )


def mlp_model() -> Model:
    return Model(
        "mlp-2x1024-b256",
        True,
        lambda r: NnxMLP(1024, 1024, r),
        nnx_mlp_pure,
        LinenHead(1024, 10),
        linen_head_pure,
        jnp.zeros((1, 1024)),
        lambda g: (
            g.normal(size=(256, 1024)).astype(np.float32),
            g.integers(0, 10, size=(256,)).astype(np.int32),
        ),
        classify=True,
    )


def transformer_model() -> Model:
    vocab, dim, heads, seq, b = 256, 128, 4, 64, 16
    return Model(
        "block-d128-t64-b16",
        False,
        lambda r: NnxBlock(dim, heads, vocab, r),
        nnx_block_pure,
        nn.Embed(vocab, dim),
        embed_pure,
        jnp.zeros((1, seq), jnp.int32),
        lambda g: (
            g.integers(0, vocab, size=(b, seq)).astype(np.int32),
            g.integers(0, vocab, size=(b, seq)).astype(np.int32),
        ),
        classify=True,
    )


MODELS = {"seed": seed_model, "mlp": mlp_model, "transformer": transformer_model}


# --- routes: each returns (step, state) --------------------------------------------


def _params(model: Model) -> tuple[Any, Any, Any]:
    module = model.make_nnx(nnx.Rngs(0))
    linen_vars = model.linen.init(jax.random.PRNGKey(1), model.linen_input)
    return module, compat.params_as_dict(module), {"params": linen_vars["params"]}


def _two_stage(model: Model, nnx_fn: Callable, linen_fn: Callable) -> Callable:
    def loss(p_nnx: Any, p_linen: Any, x: Any, y: Any) -> Any:
        if model.nnx_first:
            out = linen_fn(p_linen, nnx_fn(p_nnx, x))
        else:
            out = nnx_fn(p_nnx, linen_fn(p_linen, x))
        return model.objective(out, y)

    @jax.jit
    def step(state: Any, batch: Any, lr: Any) -> Any:
        (p_nnx, p_linen), (x, y) = state, batch
        value, (g_n, g_l) = jax.value_and_grad(loss, argnums=(0, 1))(
            p_nnx, p_linen, x, y
        )
        return (_sgd(p_nnx, g_n, lr), _sgd(p_linen, g_l, lr)), value

    return step


def route_pure(model: Model) -> tuple[Callable, Any]:
    _, p_nnx, p_linen = _params(model)
    return _two_stage(model, model.nnx_pure, model.linen_pure), (p_nnx, p_linen)


def route_manual(model: Model) -> tuple[Callable, Any]:
    _, p_nnx, p_linen = _params(model)
    return _two_stage(model, model.nnx_pure, model.linen.apply), (p_nnx, p_linen)


def route_split_merge(model: Model) -> tuple[Callable, Any]:
    module, p_nnx, p_linen = _params(model)

    def nnx_fn(p: Any, x: Any) -> Any:
        return compat.module_with_params(module, p)(x)

    return _two_stage(model, nnx_fn, model.linen.apply), (p_nnx, p_linen)


def route_nnx_jit(model: Model) -> tuple[Callable, Any]:
    module, _, p_linen = _params(model)

    def loss(m: Any, p_l: Any, x: Any, y: Any) -> Any:
        out = (
            model.linen.apply(p_l, m(x))
            if model.nnx_first
            else m(model.linen.apply(p_l, x))
        )
        return model.objective(out, y)

    @nnx.jit
    def step(m: Any, p_l: Any, x: Any, y: Any, lr: Any) -> Any:
        value, (g_m, g_l) = nnx.value_and_grad(loss, argnums=(0, 1))(m, p_l, x, y)
        nnx.update(m, _sgd(nnx.state(m, nnx.Param), g_m, lr))
        return _sgd(p_l, g_l, lr), value

    def wrapped(state: Any, batch: Any, lr: Any) -> Any:
        m, p_l = state
        new_l, value = step(m, p_l, *batch, lr)
        return (m, new_l), value

    return wrapped, (module, p_linen)


def route_to_nnx(model: Model) -> tuple[Callable, Any]:
    class Combined(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.stage = model.make_nnx(rngs)
            self.wrapped = bridge.ToNNX(model.linen, rngs=rngs)

        def __call__(self, x: Any, rngs: Any) -> Any:
            if model.nnx_first:
                return self.wrapped(self.stage(x), rngs=rngs)
            return self.stage(self.wrapped(x, rngs=rngs))

    combined = Combined(nnx.Rngs(0))
    dummy = model.batch(np.random.default_rng(0))[0][:1]
    compat.bridge_lazy_init(combined, dummy, nnx.Rngs(0))
    params = compat.params_as_dict(combined)

    def loss(p: Any, x: Any, y: Any) -> Any:
        m = compat.module_with_params(combined, p)
        return model.objective(m(x, nnx.Rngs(0)), y)

    @jax.jit
    def step(p: Any, batch: Any, lr: Any) -> Any:
        value, g = jax.value_and_grad(loss)(p, *batch)
        return _sgd(p, g, lr), value

    return step, params


def route_to_linen(model: Model) -> tuple[Callable, Any]:
    probe = model.make_nnx(nnx.Rngs(0))
    nnx_cls, nnx_args = type(probe), _ctor_args(model)

    class Combined(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            stage = bridge.to_linen(nnx_cls, *nnx_args)
            if model.nnx_first:
                return model.linen.clone(parent=self)(stage(x))
            return stage(model.linen.clone(parent=self)(x))

    combined = Combined()
    dummy = model.batch(np.random.default_rng(0))[0][:1]
    params = compat.linen_trainable(combined.init(jax.random.PRNGKey(0), dummy))

    @jax.jit
    def step(p: Any, batch: Any, lr: Any) -> Any:
        x, y = batch
        value, g = jax.value_and_grad(
            lambda q: model.objective(combined.apply({"params": q}, x), y)
        )(p)
        return _sgd(p, g, lr), value

    return step, params


def _ctor_args(model: Model) -> tuple[Any, ...]:
    return {
        "seed": (3, 4),
        "mlp-2x1024-b256": (1024, 1024),
        "block-d128-t64-b16": (128, 4, 256),
    }[model.name]


ROUTES: dict[str, Callable[[Model], tuple[Callable, Any]]] = {
    "pure": route_pure,
    "manual": route_manual,
    "split_merge": route_split_merge,
    "nnx_jit": route_nnx_jit,
    "to_nnx": route_to_nnx,
    "to_linen": route_to_linen,
}
