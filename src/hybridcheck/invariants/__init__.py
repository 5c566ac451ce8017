"""The invariants: one module per family, each holding, for each of its invariants,
the assertion, how it is checked on one example, and its registry row.

Every assertion ``assert_<name>`` is host-side and pure, chex style: it returns
``None`` or raises ``AssertionError`` (prefix ``[hybridcheck] <name>:``) whose
message names the invariant, the half, the leaf path, the values and the tolerance,
and says what it usually means. Misuse raises ``TypeError``/``ValueError``. When an
example falls outside an invariant's precondition (a vanishing gradient for the
first-order invariant) :class:`InvariantNotApplicable` is raised instead, so callers
can count such examples rather than pass or fail them.

The families are imported below in report order; each registers its rows in
:data:`REGISTRY` where it defines them. Adding an invariant touches one family
module (and its test).
"""

from hybridcheck.describe.trees import PREFIX
from hybridcheck.describe.trees import InvariantNotApplicable
from hybridcheck.describe.trees import error_regex
from hybridcheck.describe.trees import fail
from hybridcheck.invariants.registry import COSTS
from hybridcheck.invariants.registry import REGISTRY
from hybridcheck.invariants.registry import Invariant
from hybridcheck.invariants.registry import register
from hybridcheck.invariants.gradients import assert_grads_match_params
from hybridcheck.invariants.gradients import assert_every_half_gets_gradient
from hybridcheck.invariants.updates import assert_update_changes_exactly_graded_leaves
from hybridcheck.invariants.updates import assert_update_is_descent
from hybridcheck.invariants.updates import assert_sgd_update
from hybridcheck.invariants.first_order import assert_loss_decrease_first_order
from hybridcheck.invariants.optimizer import assert_every_trainable_is_trained
from hybridcheck.invariants.optimizer import assert_update_matches_tx
from hybridcheck.invariants.batch import assert_step_uses_batch
from hybridcheck.invariants.state import assert_state_is_threaded
from hybridcheck.invariants.state import assert_randomness_is_used
from hybridcheck.invariants.jit import assert_jit_matches_eager
from hybridcheck.invariants.finite_differences import (
    assert_grads_match_finite_differences,
)
from hybridcheck.invariants.execution import assert_deterministic
from hybridcheck.invariants.execution import assert_all_finite
from hybridcheck.invariants.execution import assert_inputs_unchanged
from hybridcheck.invariants.execution import assert_retrace_budget
from hybridcheck.invariants.sharded import assert_sharded_matches_single_device
from hybridcheck.invariants.migration import assert_convert_covers_every_param
from hybridcheck.invariants.migration import assert_roundtrip
from hybridcheck.invariants.migration import assert_loss_matches_before
from hybridcheck.invariants.migration import assert_grads_match_before
from hybridcheck.invariants.migration import assert_step_matches_before
from hybridcheck.invariants.migration import assert_trajectory_matches_before
from hybridcheck.invariants.migration import assert_loss_distribution_matches_before
from hybridcheck.invariants.migration import assert_sharding_matches_before

__all__ = [
    "PREFIX",
    "InvariantNotApplicable",
    "error_regex",
    "fail",
    "COSTS",
    "REGISTRY",
    "Invariant",
    "register",
    "assert_grads_match_params",
    "assert_every_half_gets_gradient",
    "assert_update_changes_exactly_graded_leaves",
    "assert_update_is_descent",
    "assert_sgd_update",
    "assert_loss_decrease_first_order",
    "assert_every_trainable_is_trained",
    "assert_update_matches_tx",
    "assert_step_uses_batch",
    "assert_state_is_threaded",
    "assert_randomness_is_used",
    "assert_jit_matches_eager",
    "assert_grads_match_finite_differences",
    "assert_deterministic",
    "assert_all_finite",
    "assert_inputs_unchanged",
    "assert_retrace_budget",
    "assert_sharded_matches_single_device",
    "assert_convert_covers_every_param",
    "assert_roundtrip",
    "assert_loss_matches_before",
    "assert_grads_match_before",
    "assert_step_matches_before",
    "assert_trajectory_matches_before",
    "assert_loss_distribution_matches_before",
    "assert_sharding_matches_before",
]
