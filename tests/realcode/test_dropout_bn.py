"""A Linen top (BatchNorm, Dropout) around a to_linen NNX block on a TrainState
(``linen_models.dropout_bn``). The bug: the step's dropout key hard-coded."""

from __future__ import annotations

from tests.realcode.corpus import check_bug, check_correct


def test_the_dropout_batchnorm_model_passes() -> None:
    check_correct("dropout_bn")


def test_a_hard_coded_dropout_key_is_rejected() -> None:
    check_bug("dropout_bn")
