"""Flax's ImageNet ResNet with its stem and head in NNX (``linen_models.resnet``).

SGD with Nesterov momentum on a linear warmup from lr 0, weight decay in the loss,
a zero-initialised scale on the block's last BatchNorm, the user's own
``TrainState.create`` call. The bug: ``apply_gradients`` without ``batch_stats``.
"""

from __future__ import annotations

from tests.realcode.corpus import check_bug, check_correct
from tests.realcode.linen_models import resnet_case


def test_the_resnet_passes() -> None:
    check_correct("resnet")


def test_statistics_left_out_of_apply_gradients_are_rejected() -> None:
    check_bug("resnet")


def test_the_imagenet_schedule_takes_a_drawn_lr() -> None:
    # linear_schedule and cosine_decay_schedule accept a traced value: drawn.
    assert resnet_case().lr is None
