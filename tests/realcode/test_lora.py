"""LoRA with gradient accumulation and clipping (``nnx_models.lora``).

The step runs the training forward once per micro-batch: the ToNNX head's RNG
count advances twice per update, which ``state_is_threaded`` reads from the step
itself. The bug: every micro-batch slices the same rows.
"""

from __future__ import annotations

from tests.realcode.corpus import check_bug, check_correct


def test_lora_with_accumulation_passes() -> None:
    check_correct("lora")


def test_micro_batches_of_the_same_rows_are_rejected() -> None:
    check_bug("lora")
