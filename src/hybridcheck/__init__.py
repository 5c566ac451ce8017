"""hybridcheck: property-based verification of hybrid Flax Linen + NNX training."""

from importlib.metadata import PackageNotFoundError, version

from hybridcheck import compat
from hybridcheck import strategies
from hybridcheck.case import HybridCase
from hybridcheck.case import sgd_step
from hybridcheck.invariants import InvariantNotApplicable
from hybridcheck.invariants import assert_all_finite
from hybridcheck.invariants import assert_bitwise_deterministic
from hybridcheck.invariants import assert_every_half_gets_gradient
from hybridcheck.invariants import assert_grads_match_finite_differences
from hybridcheck.invariants import assert_grads_match_params
from hybridcheck.invariants import assert_inputs_unchanged
from hybridcheck.invariants import assert_loss_decrease_first_order
from hybridcheck.invariants import assert_sgd_update
from hybridcheck.invariants import assert_sharded_matches_single_device
from hybridcheck.invariants import assert_traces_within
from hybridcheck.invariants import assert_trees_close_jit_eager
from hybridcheck.invariants import assert_update_changes_exactly_graded_leaves
from hybridcheck.invariants import assert_update_is_descent
from hybridcheck.step import HIDDEN
from hybridcheck.step import HybridParams
from hybridcheck.step import StepResult
from hybridcheck.step import forward
from hybridcheck.step import grads
from hybridcheck.step import init_params
from hybridcheck.step import loss
from hybridcheck.step import mixed_train_step
from hybridcheck.step import sgd_update
from hybridcheck.step import train_step
from hybridcheck.tracing import TraceCounter
from hybridcheck.tracing import count_compiles
from hybridcheck.verify import Report
from hybridcheck.verify import verify

try:
    __version__ = version("hybridcheck")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "HIDDEN",
    "HybridCase",
    "HybridParams",
    "InvariantNotApplicable",
    "Report",
    "StepResult",
    "TraceCounter",
    "assert_all_finite",
    "assert_bitwise_deterministic",
    "assert_every_half_gets_gradient",
    "assert_grads_match_finite_differences",
    "assert_grads_match_params",
    "assert_inputs_unchanged",
    "assert_loss_decrease_first_order",
    "assert_sgd_update",
    "assert_sharded_matches_single_device",
    "assert_traces_within",
    "assert_trees_close_jit_eager",
    "assert_update_changes_exactly_graded_leaves",
    "assert_update_is_descent",
    "compat",
    "count_compiles",
    "forward",
    "grads",
    "init_params",
    "loss",
    "mixed_train_step",
    "sgd_step",
    "sgd_update",
    "strategies",
    "train_step",
    "verify",
]
