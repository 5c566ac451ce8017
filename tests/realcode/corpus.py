"""The real-code corpus: correct models and their buggy twins, and how they are judged.

Each entry is a model written the way teams write it (``nnx_models``,
``linen_models``) with one realistic bug in its twin. A correct model passes every
invariant of ``hc.verify(..., profile="dev")`` and holds the invariants in
``must_hold`` (a gate that reports them n/a checks nothing); its twin fails
``caught_by``, which the correct model holds: the bug is rejected for what it is,
not for something the twins share.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import hybridcheck as hc
from hybridcheck.report.results import FAILED, HELD, Report
from tests.realcode import linen_models, nnx_models


@dataclasses.dataclass(frozen=True)
class Twin:
    make: Callable[..., hc.HybridCase]  # make(bug=False) -> the case
    caught_by: str  # the invariant that rejects the bug
    must_hold: frozenset[str]  # what the correct model must run and hold
    known_gaps: frozenset[str] = frozenset()  # see the test that pins each


TRAINING = frozenset({"every_trainable_is_trained", "every_half_gets_gradient"})

CORPUS: dict[str, Twin] = {
    "probe": Twin(
        nnx_models.probe_case,
        "every_trainable_is_trained",
        TRAINING
        | {
            "update_matches_tx",
            "update_changes_exactly_graded_leaves",
            # closed by the probe's stop_gradient at init, judged where it opens
            "grads_match_finite_differences",
        },
    ),
    "warmup_cosine": Twin(
        nnx_models.warmup_cosine_case,
        "every_trainable_is_trained",
        TRAINING | {"update_matches_tx", "update_is_descent"},
    ),
    "lora": Twin(
        nnx_models.lora_case,
        "update_matches_tx",
        TRAINING | {"state_is_threaded"},
    ),
    "resnet": Twin(
        linen_models.resnet_case,
        "state_is_threaded",
        TRAINING | {"update_matches_tx"},
    ),
    "dropout_bn": Twin(
        linen_models.dropout_bn_case,
        "update_matches_tx",
        TRAINING | {"state_is_threaded", "randomness_is_used"},
    ),
}


@functools.cache
def correct_report(name: str) -> Report:
    """The correct model's dev run (one per test session, shared by its tests)."""
    return hc.verify(CORPUS[name].make(), profile="dev", shrink_seconds=0)


def check_correct(name: str) -> None:
    twin, report = CORPUS[name], correct_report(name)
    results = report.cases[0].results
    failed = {r.invariant for r in results if r.status == FAILED}
    assert failed <= twin.known_gaps, report.table()
    held = {r.invariant for r in results if r.status == HELD}
    assert twin.must_hold | {twin.caught_by} <= held, report.table()


def check_bug(name: str) -> None:
    twin = CORPUS[name]
    report = hc.verify(
        twin.make(bug=True),
        profile="dev",
        invariants=[twin.caught_by],
        shrink_seconds=0,
    )
    (result,) = report.cases[0].results
    assert result.status == FAILED, report.table()
    # a finding about the model, not an exception from running it
    assert "raised" not in result.message, result.message
