"""Built-in migrations (before -> after, with the PR's converter) and semantic bugs.

* the seed's story: a two-layer Linen MLP -> the seed's hybrid -> a fully NNX MLP;
* a pre-norm block (LayerNorm, a multi-head projection, GELU, a square mixing kernel,
  a residual): Linen -> NNX;
* a BatchNorm model (statistics threaded by the step): Linen -> NNX;
* an Embed model: Linen -> NNX.
Each converter is a pure re-layout with its inverse. ``mutants()`` are the bugs a
migration PR really introduces, each with the invariant that names it;
``reorderings()`` are correct rewrites of the same math that must pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybridcheck import compat
from hybridcheck import seed as core
from hybridcheck import strategies as hst
from hybridcheck.case import HybridCase
from hybridcheck.cases.seed import SEED_CASE
from hybridcheck.compat import nnx
from hybridcheck.migration import MigrationCase
from hybridcheck.mutants import CaseMutant

D, H, K, W, V, T, C = 4, 2, 2, 6, 7, 3, 3


def _mse(out: Any, y: Any) -> Any:
    return jnp.mean((out - y) ** 2)


# --- the seed's story ---------------------------------------------------------------


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = jax.nn.relu(nn.Dense(core.HIDDEN)(x))
        return nn.Dense(2)(h)


class NnxMLP(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.fc1 = nnx.Linear(3, core.HIDDEN, rngs=rngs)
        self.fc2 = nnx.Linear(core.HIDDEN, 2, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.fc2(jax.nn.relu(self.fc1(x)))


_MLP, _NNX_MLP = LinenMLP(), NnxMLP(nnx.Rngs(0))

LINEN_MLP = HybridCase(
    name="linen-mlp",
    init=lambda key: {"linen": _MLP.init(key, jnp.zeros((1, 3)))},
    loss=lambda p, b: _mse(_MLP.apply(p["linen"], b[0]), b[1]),
    batches=SEED_CASE.batches,
)
NNX_MLP = HybridCase(
    name="nnx-mlp",
    init=lambda key: {"nnx": compat.params_as_dict(NnxMLP(nnx.Rngs(key)))},
    loss=lambda p, b: _mse(compat.module_with_params(_NNX_MLP, p["nnx"])(b[0]), b[1]),
    batches=SEED_CASE.batches,
)


def mlp_to_seed(p: Any) -> core.HybridParams:
    v = p["linen"]["params"]
    return core.HybridParams(
        nnx=dict(v["Dense_0"]), linen={"params": dict(v["Dense_1"])}
    )


def seed_to_mlp(p: core.HybridParams) -> Any:
    return {
        "linen": {
            "params": {"Dense_0": dict(p.nnx), "Dense_1": dict(p.linen["params"])}
        }
    }


def seed_to_nnx(p: core.HybridParams) -> Any:
    return {"nnx": {"fc1": dict(p.nnx), "fc2": dict(p.linen["params"])}}


def nnx_to_seed(p: Any) -> core.HybridParams:
    return core.HybridParams(
        nnx=dict(p["nnx"]["fc1"]), linen={"params": dict(p["nnx"]["fc2"])}
    )


# --- a pre-norm block ---------------------------------------------------------------


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = nn.LayerNorm(epsilon=1e-6, name="norm")(x)
        h = nn.DenseGeneral((H, K), name="heads")(h)
        h = nn.gelu(h.reshape(x.shape[:-1] + (H * K,)), approximate=True)
        return x + nn.Dense(D, name="mix")(h)


@dataclasses.dataclass(frozen=True)
class BlockVariant:
    """How the migrated block is written; the defaults are the exact migration."""

    eps: float = 1e-6
    approximate: bool = True
    residual: bool = True
    einsum: bool = False
    reduce: str = "mean"


class NnxBlock(nnx.Module):
    def __init__(self, rngs: Any, eps: float = 1e-6) -> None:
        self.norm = nnx.LayerNorm(D, epsilon=eps, rngs=rngs)
        self.heads = nnx.Linear(D, H * K, rngs=rngs)
        self.mix = nnx.Linear(H * K, D, rngs=rngs)


_BLOCK = LinenBlock()


def block_after(v: BlockVariant) -> HybridCase:
    template = NnxBlock(nnx.Rngs(0), eps=v.eps)

    def forward(p: Any, x: Any) -> Any:
        m = compat.module_with_params(template, p["nnx"])
        h = m.norm(x)
        if v.einsum:  # the same contraction, another summation order
            heads = compat.params_as_dict(m)["heads"]
            h = jnp.einsum("bd,dk->bk", h, heads["kernel"]) + heads["bias"][None, :]
        else:
            h = m.heads(h)
        h = m.mix(jax.nn.gelu(h, approximate=v.approximate))
        return x + h if v.residual else h

    def loss(p: Any, b: Any) -> Any:
        sq = (forward(p, b[0]) - b[1]) ** 2
        return (
            jnp.sum(sq) / sq.size
            if v.reduce == "sum/size"
            else getattr(jnp, v.reduce)(sq)
        )

    return HybridCase(
        name="nnx-block",
        init=lambda key: {"nnx": compat.params_as_dict(NnxBlock(nnx.Rngs(key), v.eps))},
        loss=loss,
        batches=_block_batches(),
    )


@st.composite
def _block_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.sampled_from([4, 8]))
    return (
        draw(hst.bounded_arrays((n, D), max_magnitude=3.0)),
        draw(hst.bounded_arrays((n, D), max_magnitude=3.0)),
    )


LINEN_BLOCK = HybridCase(
    name="linen-block",
    init=lambda key: {"linen": _BLOCK.init(key, jnp.zeros((1, D)))},
    loss=lambda p, b: _mse(_BLOCK.apply(p["linen"], b[0]), b[1]),
    batches=_block_batches(),
)


def block_to_nnx(
    p: Any, *, transpose_mix: bool = False, heads_order: str = "HK"
) -> Any:
    v = p["linen"]["params"]
    kernel = v["heads"]["kernel"]  # (D, H, K)
    if heads_order == "KH":  # BUG variant: heads flattened in the wrong order
        kernel = jnp.swapaxes(kernel, 1, 2)
    mix = v["mix"]["kernel"]
    return {
        "nnx": {
            "norm": dict(v["norm"]),
            "heads": {
                "kernel": kernel.reshape(D, H * K),
                "bias": v["heads"]["bias"].reshape(H * K),
            },
            "mix": {
                "kernel": mix.T if transpose_mix else mix,
                "bias": v["mix"]["bias"],
            },
        }
    }


def nnx_to_block(p: Any) -> Any:
    v = p["nnx"]
    return {
        "linen": {
            "params": {
                "norm": dict(v["norm"]),
                "heads": {
                    "kernel": v["heads"]["kernel"].reshape(D, H, K),
                    "bias": v["heads"]["bias"].reshape(H, K),
                },
                "mix": dict(v["mix"]),
            }
        }
    }


# --- a BatchNorm model: statistics threaded by the step ------------------------------


class LinenBN(nn.Module):
    @nn.compact
    def __call__(self, x: Any, train: bool) -> Any:
        h = nn.Dense(W, name="fc")(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(h)
        return nn.Dense(1, name="out")(jax.nn.relu(h))


class NnxBN(nnx.Module):
    def __init__(self, rngs: Any, momentum: float = 0.9) -> None:
        self.fc = nnx.Linear(D, W, rngs=rngs)
        self.bn = nnx.BatchNorm(W, momentum=momentum, rngs=rngs)
        self.out = nnx.Linear(W, 1, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.out(jax.nn.relu(self.bn(self.fc(x), use_running_average=False)))


_BN = LinenBN()


def _linen_bn_forward(p: Any, b: Any) -> Any:
    out, updates = _BN.apply(
        {**p["linen"], **p["stats"]}, b[0], train=True, mutable=["batch_stats"]
    )
    return _mse(out, b[1]), dict(updates)


def _threading_sgd(forward: Any, *, thread: bool = True) -> Any:
    """SGD on the params half; the statistics half from the same forward pass."""

    def step(p: Any, b: Any, lr: Any) -> Any:
        def loss_of(train: Any) -> Any:
            return forward({**p, **train}, b)

        g, stats = jax.grad(loss_of, has_aux=True)(
            {k: v for k, v in p.items() if k != "stats"}
        )
        new = {k: jax.tree.map(lambda a, d: a - lr * d, p[k], g[k]) for k in g}
        return {**new, "stats": stats if thread else p["stats"]}

    return step


def _bn_case(name: str, init: Any, forward: Any, **changes: Any) -> HybridCase:
    fields: dict[str, Any] = {
        "name": name,
        "init": init,
        "loss": lambda p, b: forward(p, b)[0],
        "batches": _block_batches(),
        "step": _threading_sgd(forward),
        "sgd": True,
        "non_trainable": ("stats",),
        "state_fn": lambda p, b: {"stats": forward(p, b)[1]},
    }
    return HybridCase(**{**fields, **changes})


def _linen_bn_init(key: Any) -> Any:
    v = _BN.init(key, jnp.zeros((2, D)), train=False)
    return {
        "linen": {"params": v["params"]},
        "stats": {"batch_stats": v["batch_stats"]},
    }


LINEN_BN = _bn_case("linen-batchnorm", _linen_bn_init, _linen_bn_forward)


def nnx_bn_case(momentum: float = 0.9, *, thread: bool = True) -> HybridCase:
    template = NnxBN(nnx.Rngs(0), momentum)

    def forward(p: Any, b: Any) -> Any:
        m = compat.module_with_state(
            template, [(nnx.Param, p["nnx"]), (nnx.BatchStat, p["stats"])]
        )
        return _mse(m(b[0]), b[1]), compat.params_as_dict(m, nnx.BatchStat)

    def init(key: Any) -> Any:
        m = NnxBN(nnx.Rngs(key), momentum)
        return {
            "nnx": compat.params_as_dict(m),
            "stats": compat.params_as_dict(m, nnx.BatchStat),
        }

    return _bn_case(
        "nnx-batchnorm", init, forward, step=_threading_sgd(forward, thread=thread)
    )


def bn_to_nnx(p: Any) -> Any:
    v, s = p["linen"]["params"], p["stats"]["batch_stats"]
    return {
        "nnx": {k: dict(v[k]) for k in ("fc", "bn", "out")},
        "stats": {"bn": dict(s["bn"])},
    }


def nnx_to_bn(p: Any) -> Any:
    return {
        "linen": {"params": {k: dict(p["nnx"][k]) for k in ("fc", "bn", "out")}},
        "stats": {"batch_stats": {"bn": dict(p["stats"]["bn"])}},
    }


# --- an Embed model -------------------------------------------------------------------


class LinenEmbed(nn.Module):
    @nn.compact
    def __call__(self, tokens: Any) -> Any:
        e = nn.Embed(V, D, name="embed")(tokens)
        return nn.Dense(C, name="head")(jnp.mean(e, axis=-2))


class NnxEmbed(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.embed = nnx.Embed(V, D, rngs=rngs)
        self.head = nnx.Linear(D, C, rngs=rngs)

    def __call__(self, tokens: Any) -> Any:
        return self.head(jnp.mean(self.embed(tokens), axis=-2))


def _xent(logits: Any, labels: Any) -> Any:
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


@st.composite
def _token_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.sampled_from([4, 8]))
    tokens = draw(hnp.arrays(np.int32, (n, T), elements=st.integers(0, V - 1)))
    return tokens, draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, C - 1)))


_EMBED, _NNX_EMBED = LinenEmbed(), NnxEmbed(nnx.Rngs(0))
LINEN_EMBED = HybridCase(
    name="linen-embed",
    init=lambda key: {"linen": _EMBED.init(key, jnp.zeros((1, T), jnp.int32))},
    loss=lambda p, b: _xent(_EMBED.apply(p["linen"], b[0]), b[1]),
    batches=_token_batches(),
)
NNX_EMBED = HybridCase(
    name="nnx-embed",
    init=lambda key: {"nnx": compat.params_as_dict(NnxEmbed(nnx.Rngs(key)))},
    loss=lambda p, b: _xent(
        compat.module_with_params(_NNX_EMBED, p["nnx"])(b[0]), b[1]
    ),
    batches=_token_batches(),
)


def embed_to_nnx(p: Any) -> Any:
    v = p["linen"]["params"]
    return {"nnx": {"embed": dict(v["embed"]), "head": dict(v["head"])}}


def nnx_to_embed(p: Any) -> Any:
    return {"linen": {"params": {k: dict(p["nnx"][k]) for k in ("embed", "head")}}}


# --- a pre-norm self-attention block --------------------------------------------------


class LinenAttention(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        h = nn.LayerNorm(name="norm")(x)
        return x + nn.MultiHeadDotProductAttention(num_heads=H, name="attn")(h)


class NnxAttention(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.norm = nnx.LayerNorm(D, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=H, in_features=D, decode=False, rngs=rngs
        )

    def __call__(self, x: Any) -> Any:
        return x + self.attn(self.norm(x))


@st.composite
def _sequence_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.sampled_from([2, 4]))
    return (
        draw(hst.bounded_arrays((n, T, D), max_magnitude=3.0)),
        draw(hst.bounded_arrays((n, T, D), max_magnitude=3.0)),
    )


_ATTN, _NNX_ATTN = LinenAttention(), NnxAttention(nnx.Rngs(0))
LINEN_ATTENTION = HybridCase(
    name="linen-attention",
    init=lambda key: {"linen": _ATTN.init(key, jnp.zeros((1, T, D)))},
    loss=lambda p, b: _mse(_ATTN.apply(p["linen"], b[0]), b[1]),
    batches=_sequence_batches(),
)
NNX_ATTENTION = HybridCase(
    name="nnx-attention",
    init=lambda key: {"nnx": compat.params_as_dict(NnxAttention(nnx.Rngs(key)))},
    loss=lambda p, b: _mse(compat.module_with_params(_NNX_ATTN, p["nnx"])(b[0]), b[1]),
    batches=_sequence_batches(),
)


def attention_to_nnx(p: Any, *, swap_heads: bool = False) -> Any:
    v = p["linen"]["params"]
    attn = {k: dict(v["attn"][k]) for k in ("query", "key", "value", "out")}
    if swap_heads:  # BUG variant: (in, heads, head_dim) read as (in, head_dim, heads)
        attn["query"]["kernel"] = jnp.swapaxes(attn["query"]["kernel"], 1, 2)
    return {"nnx": {"norm": dict(v["norm"]), "attn": attn}}


def nnx_to_attention(p: Any) -> Any:
    v = p["nnx"]
    attn = {k: dict(v["attn"][k]) for k in ("query", "key", "value", "out")}
    return {"linen": {"params": {"norm": dict(v["norm"]), "attn": attn}}}


# --- the built-in migrations, their bugs, and correct rewrites ---------------------


def cases() -> list[MigrationCase]:
    """The built-in migrations (each exact: every invariant must hold)."""
    return [
        MigrationCase(
            "migrate-seed:linen-mlp->hybrid",
            LINEN_MLP,
            SEED_CASE,
            mlp_to_seed,
            seed_to_mlp,
            description="the seed's story, step 1: Linen MLP -> hybrid",
        ),
        MigrationCase(
            "migrate-seed:hybrid->nnx",
            SEED_CASE,
            NNX_MLP,
            seed_to_nnx,
            nnx_to_seed,
            description="the seed's story, step 2: hybrid -> NNX MLP",
        ),
        MigrationCase(
            "migrate-block",
            LINEN_BLOCK,
            block_after(BlockVariant()),
            block_to_nnx,
            nnx_to_block,
            description="LayerNorm/heads/GELU/residual block, Linen -> NNX",
        ),
        MigrationCase(
            "migrate-batchnorm",
            LINEN_BN,
            nnx_bn_case(),
            bn_to_nnx,
            nnx_to_bn,
            description="Dense/BatchNorm (statistics threaded), Linen -> NNX",
        ),
        MigrationCase(
            "migrate-attention",
            LINEN_ATTENTION,
            NNX_ATTENTION,
            attention_to_nnx,
            nnx_to_attention,
            description="LayerNorm + self-attention + residual, Linen -> NNX",
        ),
        MigrationCase(
            "migrate-embed",
            LINEN_EMBED,
            NNX_EMBED,
            embed_to_nnx,
            nnx_to_embed,
            description="Embed -> mean -> Dense classifier, Linen -> NNX",
        ),
    ]


def _block(
    name: str, variant: BlockVariant | None = None, **changes: Any
) -> MigrationCase:
    (base,) = [c for c in cases() if c.name == "migrate-block"]
    after = block_after(variant) if variant is not None else base.after
    return dataclasses.replace(base, name=name, after=after, **changes)


def _drop_bias(p: Any) -> Any:
    out = block_to_nnx(p)
    out["nnx"]["mix"]["bias"] = jnp.zeros_like(out["nnx"]["mix"]["bias"])  # BUG
    return out


def mutants() -> list[CaseMutant]:
    """Semantic migration bugs, each with the invariant that names it."""
    (bn,) = [c for c in cases() if c.name == "migrate-batchnorm"]
    (attention,) = [c for c in cases() if c.name == "migrate-attention"]
    return [
        CaseMutant(
            "attention-heads-swapped",
            lambda: dataclasses.replace(
                attention,
                name="mig-attn-heads",
                convert=lambda p: attention_to_nnx(p, swap_heads=True),
                invert=None,
            ),
            "loss_matches_before",
            "query kernel's heads and head_dim axes swapped by the converter",
        ),
        CaseMutant(
            "layernorm-eps",
            lambda: _block("mig-eps", BlockVariant(eps=1e-5)),
            "loss_matches_before",
            "LayerNorm epsilon 1e-6 -> 1e-5",
        ),
        CaseMutant(
            "exact-gelu",
            lambda: _block("mig-gelu", BlockVariant(approximate=False)),
            "loss_matches_before",
            "exact GELU where Linen used the tanh approximation",
        ),
        CaseMutant(
            "transposed-kernel",
            lambda: _block(
                "mig-transpose",
                convert=lambda p: block_to_nnx(p, transpose_mix=True),
                invert=None,
            ),
            "loss_matches_before",
            "square mixing kernel transposed by the converter",
        ),
        CaseMutant(
            "heads-order",
            lambda: _block(
                "mig-heads",
                convert=lambda p: block_to_nnx(p, heads_order="KH"),
                invert=None,
            ),
            "loss_matches_before",
            "attention heads flattened (K, H) instead of (H, K)",
        ),
        CaseMutant(
            "residual-dropped",
            lambda: _block("mig-residual", BlockVariant(residual=False)),
            "loss_matches_before",
            "the residual connection dropped",
        ),
        CaseMutant(
            "sum-for-mean",
            lambda: _block("mig-sum", BlockVariant(reduce="sum")),
            "loss_matches_before",
            "a sum where the original took a mean",
        ),
        CaseMutant(
            "bias-dropped",
            lambda: _block("mig-bias", convert=_drop_bias, invert=None),
            "convert_covers_every_param",
            "the converter discards the mixing bias",
        ),
        CaseMutant(
            "bn-momentum",
            lambda: dataclasses.replace(
                bn, name="mig-momentum", after=nnx_bn_case(0.99)
            ),
            "step_matches_before",
            "BatchNorm momentum 0.9 -> 0.99",
        ),
        CaseMutant(
            "bn-not-threaded",
            lambda: dataclasses.replace(
                bn, name="mig-stats", after=nnx_bn_case(thread=False)
            ),
            "step_matches_before",
            "the migrated step returns the old statistics",
        ),
    ]


def reorderings() -> list[MigrationCase]:
    """Correct rewrites of the same math: every migration invariant must hold."""
    return [
        _block("mig-einsum", BlockVariant(einsum=True)),
        _block("mig-sum-over-size", BlockVariant(reduce="sum/size")),
    ]
