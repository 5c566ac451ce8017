"""Every deliberately broken step is rejected by the invariant that names its bug."""

from __future__ import annotations

import numpy as np
import pytest

from hybridcheck import checks
from hybridcheck.invariants import error_regex
from hybridcheck.mutants import MUTANTS
from hybridcheck.seed_subject import seed_example_to_check, seed_subject
from hybridcheck.strategies import SeedExample

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
    check = checks.CHECKS[mutant.caught_by]

    def twice():  # some bugs need two calls to show (state carried between calls)
        check(subject, example)
        check(subject, example)

    with pytest.raises(AssertionError, match=error_regex(mutant.caught_by)):
        twice()


@pytest.mark.parametrize("invariant", list(checks.CHECKS))
def test_correct_step_passes_the_fixed_example(invariant):
    checks.CHECKS[invariant](seed_subject(), seed_example_to_check(EXAMPLE))


def test_loss_ignoring_a_half_fails_gradient_flow():
    subject = seed_subject()
    example = seed_example_to_check(EXAMPLE)
    frozen_linen = example.params.linen

    def loss_closing_over_linen(params, batch):
        from hybridcheck.seed_subject import seed_loss

        return seed_loss(params._replace(linen=frozen_linen), batch)

    subject = checks.Subject(
        loss=loss_closing_over_linen, step=subject.step, halves=subject.halves
    )
    for _ in range(3):
        subject.grads_seen.append(subject.grad_fn(example.params, example.batch))
    with pytest.raises(
        AssertionError,
        match=error_regex("every_half_gets_gradient", "half 'linen'", "all 3 examples"),
    ):
        checks.CROSS_EXAMPLE_CHECKS["every_half_gets_gradient"](subject)
