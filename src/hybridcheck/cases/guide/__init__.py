"""The model families of Flax's bridge guide as built-in cases, and real bugs in them.

The guide ("Use Flax NNX and Linen together") is transcribed family by family, each
written as a user would: the model, the loss, the user's own train step and one
``from_nnx``/``from_linen`` call (:func:`user_code_lines` counts them; the guide's
own layers, in ``layers.py``, are not counted). ``nnx_families.py`` holds the NNX
models with Linen parts, ``linen_families.py`` the Linen modules with NNX parts,
``common.py`` the shapes, batches and losses they share.

:func:`mutants` (``bugs.py``) are the bugs users write in the same models, each with
the invariant that names it.

Releases (measured on Flax 0.10.2, 0.11.2, 0.12.8; the bridge exists from 0.9.0):

* Flax < 0.12: ``ToNNX(...)(x, mutable=[...])`` inside ``bridge.lazy_init`` raises
  ``ScopeCollectionNotFound`` (``mutable`` reaches ``init_with_output``): the
  families that call ToNNX with ``mutable`` (``nnx_dropout_bn``, ``counter``) need
  0.12.
* Flax < 0.11: ``apply`` of a ``to_linen`` module needs ToLinen's ``'nnx'``
  collection ("GraphDef not found in variables"), ``to_linen(nnx.Dropout)`` fails
  under ``jax.jit`` and ``nnx.Optimizer`` has no ``wrt``: the ``to_linen`` families
  (``to_linen_dot``, ``linen_dropout_bn``, ``to_linen_multi``) need 0.11.
"""

from __future__ import annotations

from typing import Any

from hybridcheck import compat
from hybridcheck.cases.guide.bugs import BUGS, mutants
from hybridcheck.cases.guide.code_lines import user_code_lines
from hybridcheck.cases.guide.common import TO_LINEN_APPLY, TO_NNX_MUTABLE
from hybridcheck.cases.guide.layers import Count
from hybridcheck.cases.guide.linen_families import (
    linen_dropout_bn,
    to_linen_dot,
    to_linen_multi,
)
from hybridcheck.cases.guide.nnx_families import (
    counter,
    lora,
    nnx_dropout_bn,
    to_nnx_dot,
)
from hybridcheck.describe.hybrid_case import HybridCase

__all__ = ["BUGS", "FAMILIES", "Count", "cases", "mutants", "user_code_lines"]

FAMILIES: dict[str, tuple[Any, tuple[int, ...]]] = {
    # name: (factory, the Flax release the guide's code needs)
    "to_nnx_dot": (to_nnx_dot, (0, 9, 0)),
    "to_linen_dot": (to_linen_dot, TO_LINEN_APPLY),
    "nnx_dropout_bn": (nnx_dropout_bn, TO_NNX_MUTABLE),
    "linen_dropout_bn": (linen_dropout_bn, TO_LINEN_APPLY),
    "lora": (lora, (0, 9, 0)),
    "counter": (counter, TO_NNX_MUTABLE),
    "to_linen_multi": (to_linen_multi, TO_LINEN_APPLY),
}


def cases() -> list[HybridCase]:
    """The guide families this release can run (none without the bridge)."""
    if not compat.HAS_BRIDGE:
        return []
    return [
        factory()
        for factory, needs in FAMILIES.values()
        if compat.FLAX_VERSION >= needs
    ]
