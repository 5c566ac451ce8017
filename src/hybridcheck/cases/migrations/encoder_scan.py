"""The encoder migrated as stacked layers: Linen ``nn.scan`` -> NNX blocks stacked by
``nnx.vmap`` and applied by ``nnx.scan`` (Flax 0.11+, ``compat.HAS_NNX_SCAN``).

The blocks are :class:`~hybridcheck.cases.migrations.encoder.NnxEncoderBlock`; the
params keep their leading layer axis on both sides, so the converter only renames
the collections: every kernel keeps its layout and its place in the stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from hybridcheck.cases.migrations.encoder import (
    LINEN_ENCODER,
    POSITIONS,
    C,
    D,
    EncoderVariant,
    L,
    NnxEncoderBlock,
    nnx_encoder,
)
from hybridcheck.compat import nnx
from hybridcheck.describe.migration_case import MigrationCase

TOP = ("layers", "norm", "head")


class NnxScanEncoder(nnx.Module):
    def __init__(self, rngs: Any, v: EncoderVariant) -> None:
        @nnx.split_rngs(splits=L)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def stack(rngs: Any) -> NnxEncoderBlock:
            return NnxEncoderBlock(rngs, v)

        self.layers = stack(rngs)
        self.norm = nnx.LayerNorm(D, epsilon=v.eps, rngs=rngs)
        self.head = nnx.Linear(D, C, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def apply(x: Any, block: NnxEncoderBlock) -> Any:
            return block(x)

        return self.head(jnp.mean(self.norm(apply(x + POSITIONS, self.layers)), -2))


def _copy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _copy(v) for k, v in tree.items()}
    return tree


def scan_to_nnx_scan(p: Any) -> Any:
    """Linen scan params -> the NNX stack: the same arrays, the same layer axis."""
    return {"nnx": {k: _copy(p["linen"]["params"][k]) for k in TOP}}


def nnx_scan_to_scan(p: Any) -> Any:
    """The inverse."""
    return {"linen": {"params": {k: _copy(p["nnx"][k]) for k in TOP}}}


def encoder_scan_migration(name: str) -> MigrationCase:
    """The exact migration to the stacked NNX encoder."""
    return MigrationCase(
        name,
        LINEN_ENCODER,
        nnx_encoder(EncoderVariant(), NnxScanEncoder, "nnx-scan-encoder"),
        scan_to_nnx_scan,
        nnx_scan_to_scan,
        description=f"{L}-layer transformer encoder, Linen nn.scan -> nnx.vmap "
        "stack under nnx.scan",
    )
