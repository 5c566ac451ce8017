"""What from_nnx and from_linen share: a model's case functions, and the case they make.

Each ``from_*`` functionalizes its model into a :class:`Functional` (the layout, the
``opt`` half's tree, ``init``/``loss``/``step`` and the automatic training-loop
fields it found); :meth:`Functional.case` adds what the user passed.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.flaxmodels.halves import OPT, Layout
from hybridcheck.flaxmodels.opt_half import PlainTree

Patterns = Mapping[str, str | Sequence[str]]

_AUTO = ("state_fn", "reseed", "rng_halves", "partition_specs")


def _is_sgd(tx: Any) -> bool:
    optax = sys.modules.get("optax")
    return optax is not None and tx is optax.sgd


def loss_value(out: Any) -> Any:
    return out[0] if type(out) is tuple else out


@dataclasses.dataclass(frozen=True)
class Functional:
    """A model functionalized: its halves and the case's functions."""

    layout: Layout
    opt: PlainTree | None  # the optimizer's state (None: it has none to thread)
    init: Callable[[Any], dict[str, Any]]
    loss: Callable[[Any, Any], Any]
    step: Callable[[Any, Any, Any], dict[str, Any]]
    auto: dict[str, Any]  # the automatic fields found (None: not for this model)

    def case(
        self,
        kind: str,
        name: str,
        tx: Any,
        sgd: bool | None,
        batches: Any,
        lr: Any,
        description: str,
        options: dict[str, Any],
    ) -> HybridCase:
        """The case of a ``kind`` ("NNX", "Linen") model with what the user passed."""
        auto = self.auto
        if self.opt is not None:
            auto = {**auto, "tx": tx}
        auto = {k: v for k, v in auto.items() if v is not None}
        for key in _AUTO:  # the user's own value wins, None switches it off
            if key in options:
                auto.pop(key, None)
                value = options.pop(key)
                if value is not None:
                    auto[key] = value
        opt = (OPT,) if self.opt is not None else ()
        return HybridCase(
            name=name,
            non_trainable=self.layout.non_trainable + opt,
            sgd=_is_sgd(tx) if sgd is None else sgd,
            init=self.init,
            loss=self.loss,
            batches=batches,
            step=self.step,
            lr=lr,
            description=description or f"{kind} model, halves {self.layout.labels}",
            **auto,
            **options,
        )
