"""Built-in migrations (before -> after, with the PR's converter) and semantic bugs.

* the seed's story: a two-layer Linen MLP -> the seed's hybrid -> a fully NNX MLP;
* a pre-norm block (LayerNorm, a multi-head projection, GELU, a square mixing kernel,
  a residual): Linen -> NNX;
* a BatchNorm model (statistics threaded by the step): Linen -> NNX;
* an Embed model: Linen -> NNX;
* a tensor-parallel block (logical partitioning, heads flattened): Linen -> NNX;
* an MLP with Dropout (compared deterministic, and in distribution over keys):
  Linen -> NNX;
* a transformer encoder (attention + MLP blocks): Linen layers stacked by
  ``nn.scan`` -> NNX layers in a list, and (Flax 0.11+) -> NNX layers stacked by
  ``nnx.vmap`` and applied by ``nnx.scan``.
Each converter is a pure re-layout with its inverse. ``mutants()`` are the bugs a
migration PR really introduces, each with the invariant that names it;
``reorderings()`` are correct rewrites of the same math that must pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from hybridcheck import compat
from hybridcheck.cases.migrations.attention import (
    LINEN_ATTENTION,
    NNX_ATTENTION,
    attention_to_nnx,
    nnx_to_attention,
)
from hybridcheck.cases.migrations.batchnorm import (
    LINEN_BN,
    bn_to_nnx,
    nnx_bn_case,
    nnx_to_bn,
)
from hybridcheck.cases.migrations.block import (
    LINEN_BLOCK,
    BlockVariant,
    block_after,
    block_to_nnx,
    nnx_to_block,
)
from hybridcheck.cases.migrations.dropout import dropout_migration, dropout_mutants
from hybridcheck.cases.migrations.embed import (
    LINEN_EMBED,
    NNX_EMBED,
    embed_to_nnx,
    nnx_to_embed,
)
from hybridcheck.cases.migrations.encoder import encoder_migration, encoder_mutants
from hybridcheck.cases.migrations.encoder_scan import encoder_scan_migration
from hybridcheck.cases.migrations.partitioned import (
    AXIS_RULES,
    LINEN_TP,
    LINEN_TP_SPECS,
    Names,
    nnx_to_tp,
    nnx_tp,
    tp_to_nnx,
)
from hybridcheck.cases.migrations.seed_story import (
    LINEN_MLP,
    NNX_MLP,
    mlp_to_seed,
    nnx_to_seed,
    seed_to_mlp,
    seed_to_nnx,
)
from hybridcheck.cases.mutants import CaseMutant
from hybridcheck.cases.seed import SEED_CASE
from hybridcheck.describe.migration_case import MigrationCase

__all__ = ["cases", "mutants", "reorderings"]


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
        _partitioned("migrate-partitioned"),
        dropout_migration(
            "migrate-dropout",
            description="Dense/Dropout MLP (deterministic and in distribution), "
            "Linen -> NNX",
        ),
        encoder_migration("migrate-encoder:scan->list"),
        *(
            [encoder_scan_migration("migrate-encoder:scan->nnx-scan")]
            if compat.HAS_NNX_SCAN  # nnx.split_rngs / nnx.Carry: Flax 0.11+
            else []
        ),
    ]


def _partitioned(name: str, names: Names | None = None) -> MigrationCase:
    after, after_specs = nnx_tp(names or Names())
    return MigrationCase(
        name,
        LINEN_TP,
        after,
        tp_to_nnx,
        nnx_to_tp,
        description="tensor-parallel heads (logical partitioning), Linen -> NNX",
        before_specs=LINEN_TP_SPECS,
        after_specs=after_specs,
        axis_rules=AXIS_RULES,
    )


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
        CaseMutant(
            "partitioning-dropped",
            lambda: _partitioned("mig-unsharded", Names(heads_kernel=("embed", None))),
            "sharding_matches_before",
            "the heads kernel's partitioning dropped in the NNX model",
        ),
        CaseMutant(
            "partitioning-transposed",
            lambda: _partitioned("mig-sharded-t", Names(out_kernel=("embed", "mlp"))),
            "sharding_matches_before",
            "the output kernel partitioned on its other axis in the NNX model",
        ),
        *dropout_mutants(),
        *encoder_mutants(),
    ]


def reorderings() -> list[MigrationCase]:
    """Correct rewrites of the same math: every migration invariant must hold."""
    return [
        _block("mig-einsum", BlockVariant(einsum=True)),
        _block("mig-sum-over-size", BlockVariant(reduce="sum/size")),
    ]
