"""Every deliberately broken step is rejected by the invariant that names its bug."""

from __future__ import annotations

import numpy as np
import pytest

from hybridcheck.cases.mutants import MUTANTS
from hybridcheck.describe.strategies import SeedExample
from hybridcheck.describe.subject import Subject
from hybridcheck.invariants import error_regex, registry
from hybridcheck.invariants.gradients import (
    conclude_every_half_gets_gradient as conclude_gradient_reach,
)
from hybridcheck.seed import batch_loss
from tests.seed_subject import seed_example_to_check, seed_subject

# A fixed, unremarkable example: every ReLU unit alive for some rows, gradient clearly
# nonzero on both halves.
RNG = np.random.default_rng(0)
EXAMPLE = SeedExample(
    seed=3,
    x=RNG.normal(size=(4, 3)).astype(np.float32),
    y=RNG.normal(size=(4, 2)).astype(np.float32),
    lr=0.05,
)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_caught_by_its_invariant(mutant):
    subject = seed_subject(mutant.step)
    example = seed_example_to_check(EXAMPLE)
    check = registry.REGISTRY[mutant.caught_by].check

    def twice():  # some bugs need two calls to show (state carried between calls)
        check(subject, example)
        check(subject, example)

    with pytest.raises(AssertionError, match=error_regex(mutant.caught_by)):
        twice()


@pytest.mark.parametrize(
    "invariant",
    [
        n
        for n, inv in registry.REGISTRY.items()
        if inv.kind == "step" and not inv.needs_field
    ],
)
def test_correct_step_passes_the_fixed_example(invariant):
    registry.REGISTRY[invariant].check(seed_subject(), seed_example_to_check(EXAMPLE))


def test_loss_ignoring_a_half_fails_gradient_flow():
    subject = seed_subject()
    example = seed_example_to_check(EXAMPLE)
    frozen_linen = example.params.linen

    def loss_closing_over_linen(params, batch):
        return batch_loss(params._replace(linen=frozen_linen), batch)

    subject = Subject(
        loss=loss_closing_over_linen, step=subject.step, halves=subject.halves
    )
    for lr in (0.1, 0.2, 0.3):  # three examples: each gradient is recorded once
        subject.grads(example._replace(lr=lr))
    assert len(subject.grads_seen) == 3
    with pytest.raises(
        AssertionError,
        match=error_regex("every_half_gets_gradient", "half 'linen'", "all 3 examples"),
    ):
        conclude_gradient_reach(subject)
