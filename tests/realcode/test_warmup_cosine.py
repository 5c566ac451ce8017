"""AdamW on a warmup-cosine schedule from lr 0 (``nnx_models.warmup_cosine``).

optax cannot build ``warmup_cosine_decay_schedule`` from a traced peak lr
(``peak_value == 0.0`` in Python): the user's ``optimizer_fn`` gets one concrete lr,
and what each step applies (0 at the first) is read from the optimizer. The bug: a
functional ``jax.jit`` step that writes back the model's state but not the
optimizer's, so the schedule never leaves its first (zero) step.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

import hybridcheck as hc
from hybridcheck.flaxmodels.optimizers import FIXED_LR
from tests.realcode import nnx_models
from tests.realcode.corpus import check_bug, check_correct


def test_the_warmup_cosine_model_passes() -> None:
    check_correct("warmup_cosine")


def test_an_optimizer_state_never_written_back_is_rejected() -> None:
    check_bug("warmup_cosine")


def _case(**kwargs: Any) -> hc.HybridCase:
    return hc.from_nnx(
        "warmup-cosine-lr",
        model_fn=lambda rngs: nnx_models.nnx.bridge.lazy_init(
            nnx_models.Classifier(rngs), nnx_models.jnp.ones((1, nnx_models.IN))
        ),
        loss_fn=nnx_models.cross_entropy,
        train_step=nnx_models.adam_train_step,
        optimizer_fn=nnx_models.make_optimizer,
        batches=nnx_models.classification_batches(),
        **kwargs,
    )


def test_a_schedule_that_needs_a_concrete_lr_gets_one() -> None:
    assert nnx_models.warmup_cosine_case().lr == FIXED_LR
    assert _case(lr=0.003).lr == 0.003
    with pytest.raises(ValueError, match=r"lr: optimizer_fn cannot be built from a"):
        _case(lr=st.floats(0.001, 0.1))
