"""Chex-style assertions about one hybrid training step, one module per family.

Every assertion is host-side and pure: it returns ``None`` or raises
``AssertionError`` (prefix ``[hybridcheck] <invariant>:``) whose message names the
invariant, the half, the leaf path, the values and the tolerance, and says what it
usually means. Misuse raises ``TypeError``/``ValueError``. When an example falls
outside an invariant's precondition (a vanishing gradient for the first-order check)
:class:`InvariantNotApplicable` is raised instead, so callers can count such examples
rather than pass or fail them. ``assert_<name>`` fails as ``<name>``.
"""

from hybridcheck.invariants._tree import PREFIX
from hybridcheck.invariants._tree import InvariantNotApplicable
from hybridcheck.invariants._tree import error_regex
from hybridcheck.invariants._tree import fail
from hybridcheck.invariants.execution import assert_all_finite
from hybridcheck.invariants.execution import assert_deterministic
from hybridcheck.invariants.execution import assert_inputs_unchanged
from hybridcheck.invariants.execution import assert_jit_matches_eager
from hybridcheck.invariants.execution import assert_retrace_budget
from hybridcheck.invariants.execution import assert_sharded_matches_single_device
from hybridcheck.invariants.gradients import assert_every_half_gets_gradient
from hybridcheck.invariants.gradients import assert_grads_match_finite_differences
from hybridcheck.invariants.gradients import assert_grads_match_params
from hybridcheck.invariants.migration import assert_convert_covers_every_param
from hybridcheck.invariants.migration import assert_grads_match_before
from hybridcheck.invariants.migration import assert_loss_matches_before
from hybridcheck.invariants.migration import assert_roundtrip
from hybridcheck.invariants.migration import assert_step_matches_before
from hybridcheck.invariants.migration import assert_trajectory_matches_before
from hybridcheck.invariants.partitioning import assert_sharding_matches_before
from hybridcheck.invariants.training import assert_every_trainable_is_trained
from hybridcheck.invariants.training import assert_randomness_is_used
from hybridcheck.invariants.training import assert_state_is_threaded
from hybridcheck.invariants.training import assert_update_matches_tx
from hybridcheck.invariants.updates import assert_loss_decrease_first_order
from hybridcheck.invariants.updates import assert_sgd_update
from hybridcheck.invariants.updates import assert_update_changes_exactly_graded_leaves
from hybridcheck.invariants.updates import assert_update_is_descent

__all__ = [
    "PREFIX",
    "InvariantNotApplicable",
    "error_regex",
    "fail",
    "assert_all_finite",
    "assert_deterministic",
    "assert_inputs_unchanged",
    "assert_jit_matches_eager",
    "assert_retrace_budget",
    "assert_sharded_matches_single_device",
    "assert_every_half_gets_gradient",
    "assert_grads_match_finite_differences",
    "assert_grads_match_params",
    "assert_convert_covers_every_param",
    "assert_grads_match_before",
    "assert_loss_matches_before",
    "assert_roundtrip",
    "assert_step_matches_before",
    "assert_trajectory_matches_before",
    "assert_sharding_matches_before",
    "assert_every_trainable_is_trained",
    "assert_randomness_is_used",
    "assert_state_is_threaded",
    "assert_update_matches_tx",
    "assert_loss_decrease_first_order",
    "assert_sgd_update",
    "assert_update_changes_exactly_graded_leaves",
    "assert_update_is_descent",
]
