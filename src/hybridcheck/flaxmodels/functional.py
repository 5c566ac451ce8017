"""What from_nnx and from_linen share: a model's case functions, and the case they make.

Each ``from_*`` functionalizes its model into a :class:`Functional` (the layout, the
``opt`` half's tree, ``init``/``loss``/``step`` and the automatic training-loop
fields it found); :meth:`Functional.case` adds what the user passed.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from hypothesis import strategies as st

from hybridcheck.describe.fields import given
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.flaxmodels.halves import OPT, Layout
from hybridcheck.flaxmodels.opt_half import PlainTree
from hybridcheck.flaxmodels.terms import ModelTerms

Patterns = Mapping[str, str | Sequence[str]]

_AUTO = ("state_fn", "reseed", "rng_halves", "partition_specs")


_SET_BY_US = {"init": "{init}", "loss": "loss_fn", "step": "train_step"}
_OWN = {
    *("name", "batches", "halves", "non_trainable", "lr", "sgd", "description"),
    *("tx", "model_terms"),
}


def check_options(
    name: str, origin: str, init: str, batches: Any, options: Mapping[str, Any]
) -> None:
    """What ``from_nnx`` / ``from_linen`` (``origin``) pass on to HybridCase,
    checked before the model is touched: ``init``/``loss``/``step`` and
    ``non_trainable`` are made from the model (``init`` names what makes params),
    any other option must be a HybridCase field, ``batches`` a source of batches.

    Raises:
      TypeError: an option that is not a field it passes on, or bad ``batches``.
    """
    passed_on = sorted(
        f.name
        for f in dataclasses.fields(HybridCase)
        if f.name not in _OWN and f.name not in _SET_BY_US
    )
    for key in options:
        if key in _SET_BY_US:
            ours = _SET_BY_US[key].format(init=init)
            raise TypeError(
                f"[{name}] {origin} got {key}=..., a HybridCase field it makes itself "
                f"from {ours}: pass {ours}=... instead of {key}=..."
            )
        if key == "non_trainable":
            raise TypeError(
                f"[{name}] {origin} got non_trainable=...: it reads the state halves "
                "from the model (and the optimizer's 'opt'); to leave parameters "
                "untrained on purpose pass frozen=fn(half, path)"
            )
        if key not in passed_on:
            raise TypeError(
                f"[{name}] {origin} got an unexpected argument {key!r}; besides its "
                f"own it takes the HybridCase fields {passed_on}"
            )
    if not (isinstance(batches, st.SearchStrategy) or callable(batches)):
        raise TypeError(
            f"[{name}] {origin}: batches must be a Hypothesis strategy of batches or "
            f"a function key -> batch, got {given(batches)}; wrap fixed data in "
            "st.just(batch) or st.sampled_from([batch, ...])"
        )


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
        *,
        given: Any = None,
    ) -> HybridCase:
        """The case of a ``kind`` ("NNX", "Linen") model with what the user passed.

        ``tx`` is the case's ``tx(lr)`` (read from the user's optimizer factory
        where they gave one), ``given`` the ``tx=`` they passed (None with a
        factory): ``sgd`` defaults to ``given is optax.sgd``."""
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
        template = functools.cache(lambda: self.init(jax.random.PRNGKey(0)))
        prefix = ("params",) if kind == "Linen" else ()
        return HybridCase(
            name=name,
            non_trainable=self.layout.non_trainable + opt,
            sgd=_is_sgd(given) if sgd is None else sgd,
            init=self.init,
            loss=self.loss,
            batches=batches,
            step=self.step,
            lr=lr,
            description=description or f"{kind} model, halves {self.layout.labels}",
            model_terms=ModelTerms(kind, self.layout, prefix, template),
            **auto,
            **options,
        )
