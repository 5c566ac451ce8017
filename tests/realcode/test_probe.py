"""An NNX encoder + ToNNX head with a linear-probe warmup (``nnx_models.probe``).

The encoder's output is behind ``stop_gradient`` while the model's step counter is
below ``PROBE_STEPS``: its gradient is zero at initialisation and nonzero once the
first step has counted, so the gradient and update invariants are judged along the
trajectory. The bug: the probe phase's head-only ``wrt`` left in the user's own
``nnx.Optimizer`` call, so the encoder never trains.
"""

from __future__ import annotations

import jax

import hybridcheck as hc
from hybridcheck.report.results import FAILED, HELD
from tests.realcode.corpus import check_bug, check_correct, correct_report
from tests.realcode.nnx_models import probe_case


def test_the_probe_passes() -> None:
    check_correct("probe")


def test_a_head_only_wrt_is_rejected() -> None:
    check_bug("probe")


def test_finite_differences_are_judged_where_the_probe_opens() -> None:
    results = correct_report("probe").cases[0].results
    (fd,) = [r for r in results if r.invariant == "grads_match_finite_differences"]
    assert fd.status == HELD, fd.message
    assert "gated by the step count" in fd.message


def test_an_ungated_stop_gradient_still_fails_finite_differences() -> None:
    # the same encoder behind stop_gradient at every step: wrong at both points
    report = hc.verify(
        probe_case(gate_steps=10**6),
        profile="dev",
        invariants=["grads_match_finite_differences"],
        shrink_seconds=0,
    )
    (fd,) = report.cases[0].results
    assert fd.status == FAILED, fd.message


def test_the_users_optimizer_is_the_one_that_runs() -> None:
    # The optimizer state threaded from step to step is the one the user's own
    # nnx.Optimizer(..., wrt=...) call makes: Adam moments of the head only under
    # the bug's head-only filter.
    def moment_paths(case: hc.HybridCase) -> set[str]:
        opt = case.init(jax.random.PRNGKey(0))["opt"]
        return {
            jax.tree_util.keystr(path)
            for path, _ in jax.tree_util.tree_flatten_with_path(opt["opt_state"])[0]
            if "mu" in jax.tree_util.keystr(path)
        }

    correct, bug = moment_paths(probe_case()), moment_paths(probe_case(bug=True))
    assert any("encoder" in p for p in correct)
    assert bug
    assert not any("encoder" in p for p in bug)
    assert probe_case().lr is None  # optax.adam(lr) takes a traced lr: drawn
