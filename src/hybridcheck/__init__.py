"""hybridcheck: property-based verification of hybrid Flax Linen + NNX training."""

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are; at run time they load on first use
    from hybridcheck import compat
    from hybridcheck import invariants
    from hybridcheck import seed
    from hybridcheck.describe import strategies
    from hybridcheck.describe.hybrid_case import HybridCase
    from hybridcheck.describe.hybrid_case import sgd_step
    from hybridcheck.flaxmodels.functionalize import UserCodeError
    from hybridcheck.flaxmodels.functionalize import from_linen
    from hybridcheck.flaxmodels.functionalize import from_nnx
    from hybridcheck.invariants.registry import REGISTRY
    from hybridcheck.invariants import InvariantNotApplicable
    from hybridcheck.describe.migration_case import MigrationCase
    from hybridcheck.invariants.migration.localisation import Localisation
    from hybridcheck.invariants.migration.localisation import localise
    from hybridcheck.invariants import assert_all_finite
    from hybridcheck.invariants import assert_convert_covers_every_param
    from hybridcheck.invariants import assert_deterministic
    from hybridcheck.invariants import assert_every_half_gets_gradient
    from hybridcheck.invariants import assert_every_trainable_is_trained
    from hybridcheck.invariants import assert_grads_match_before
    from hybridcheck.invariants import assert_grads_match_finite_differences
    from hybridcheck.invariants import assert_grads_match_params
    from hybridcheck.invariants import assert_inputs_unchanged
    from hybridcheck.invariants import assert_jit_matches_eager
    from hybridcheck.invariants import assert_loss_decrease_first_order
    from hybridcheck.invariants import assert_loss_distribution_matches_before
    from hybridcheck.invariants import assert_loss_matches_before
    from hybridcheck.invariants import assert_randomness_is_used
    from hybridcheck.invariants import assert_retrace_budget
    from hybridcheck.invariants import assert_roundtrip
    from hybridcheck.invariants import assert_sgd_update
    from hybridcheck.invariants import assert_sharded_matches_single_device
    from hybridcheck.invariants import assert_sharding_matches_before
    from hybridcheck.invariants import assert_state_is_threaded
    from hybridcheck.invariants import assert_step_uses_batch
    from hybridcheck.invariants import assert_step_matches_before
    from hybridcheck.invariants import assert_trajectory_matches_before
    from hybridcheck.invariants import assert_update_changes_exactly_graded_leaves
    from hybridcheck.invariants import assert_update_is_descent
    from hybridcheck.invariants import assert_update_matches_tx
    from hybridcheck.engine.profiles import PROFILES
    from hybridcheck.report.results import CaseReport
    from hybridcheck.report.results import InvariantResult
    from hybridcheck.report.results import Report
    from hybridcheck.seed import HybridParams
    from hybridcheck.seed import init_params
    from hybridcheck.seed import mixed_train_step
    from hybridcheck.seed import train_step
    from hybridcheck.describe.tracing import TraceCounter
    from hybridcheck.describe.tracing import count_compiles
    from hybridcheck.engine.verify import verify
    from hybridcheck.engine.propose import Proposal
    from hybridcheck.engine.propose import propose_convert

# The public API, loaded on first use (PEP 562): ``import hybridcheck`` stays cheap
# for the command line's supervisor, which only starts a worker.
_LAZY: dict[str, tuple[str, str | None]] = {
    "compat": ("hybridcheck.compat", None),
    "invariants": ("hybridcheck.invariants", None),
    "seed": ("hybridcheck.seed", None),
    "strategies": ("hybridcheck.describe.strategies", None),
    "HybridCase": ("hybridcheck.describe.hybrid_case", "HybridCase"),
    "sgd_step": ("hybridcheck.describe.hybrid_case", "sgd_step"),
    "UserCodeError": ("hybridcheck.flaxmodels.functionalize", "UserCodeError"),
    "from_linen": ("hybridcheck.flaxmodels.functionalize", "from_linen"),
    "from_nnx": ("hybridcheck.flaxmodels.functionalize", "from_nnx"),
    "REGISTRY": ("hybridcheck.invariants", "REGISTRY"),
    "InvariantNotApplicable": ("hybridcheck.invariants", "InvariantNotApplicable"),
    "MigrationCase": ("hybridcheck.describe.migration_case", "MigrationCase"),
    "Localisation": (
        "hybridcheck.invariants.migration.localisation",
        "Localisation",
    ),
    "localise": ("hybridcheck.invariants.migration.localisation", "localise"),
    "Proposal": ("hybridcheck.engine.propose", "Proposal"),
    "propose_convert": ("hybridcheck.engine.propose", "propose_convert"),
    "assert_all_finite": ("hybridcheck.invariants", "assert_all_finite"),
    "assert_convert_covers_every_param": (
        "hybridcheck.invariants",
        "assert_convert_covers_every_param",
    ),
    "assert_deterministic": ("hybridcheck.invariants", "assert_deterministic"),
    "assert_every_half_gets_gradient": (
        "hybridcheck.invariants",
        "assert_every_half_gets_gradient",
    ),
    "assert_every_trainable_is_trained": (
        "hybridcheck.invariants",
        "assert_every_trainable_is_trained",
    ),
    "assert_grads_match_before": (
        "hybridcheck.invariants",
        "assert_grads_match_before",
    ),
    "assert_grads_match_finite_differences": (
        "hybridcheck.invariants",
        "assert_grads_match_finite_differences",
    ),
    "assert_grads_match_params": (
        "hybridcheck.invariants",
        "assert_grads_match_params",
    ),
    "assert_inputs_unchanged": ("hybridcheck.invariants", "assert_inputs_unchanged"),
    "assert_jit_matches_eager": ("hybridcheck.invariants", "assert_jit_matches_eager"),
    "assert_loss_decrease_first_order": (
        "hybridcheck.invariants",
        "assert_loss_decrease_first_order",
    ),
    "assert_loss_distribution_matches_before": (
        "hybridcheck.invariants",
        "assert_loss_distribution_matches_before",
    ),
    "assert_loss_matches_before": (
        "hybridcheck.invariants",
        "assert_loss_matches_before",
    ),
    "assert_randomness_is_used": (
        "hybridcheck.invariants",
        "assert_randomness_is_used",
    ),
    "assert_retrace_budget": ("hybridcheck.invariants", "assert_retrace_budget"),
    "assert_roundtrip": ("hybridcheck.invariants", "assert_roundtrip"),
    "assert_sgd_update": ("hybridcheck.invariants", "assert_sgd_update"),
    "assert_sharded_matches_single_device": (
        "hybridcheck.invariants",
        "assert_sharded_matches_single_device",
    ),
    "assert_sharding_matches_before": (
        "hybridcheck.invariants",
        "assert_sharding_matches_before",
    ),
    "assert_state_is_threaded": ("hybridcheck.invariants", "assert_state_is_threaded"),
    "assert_step_uses_batch": ("hybridcheck.invariants", "assert_step_uses_batch"),
    "assert_step_matches_before": (
        "hybridcheck.invariants",
        "assert_step_matches_before",
    ),
    "assert_trajectory_matches_before": (
        "hybridcheck.invariants",
        "assert_trajectory_matches_before",
    ),
    "assert_update_changes_exactly_graded_leaves": (
        "hybridcheck.invariants",
        "assert_update_changes_exactly_graded_leaves",
    ),
    "assert_update_is_descent": ("hybridcheck.invariants", "assert_update_is_descent"),
    "assert_update_matches_tx": ("hybridcheck.invariants", "assert_update_matches_tx"),
    "PROFILES": ("hybridcheck.engine.profiles", "PROFILES"),
    "CaseReport": ("hybridcheck.report.results", "CaseReport"),
    "InvariantResult": ("hybridcheck.report.results", "InvariantResult"),
    "Report": ("hybridcheck.report.results", "Report"),
    "HybridParams": ("hybridcheck.seed", "HybridParams"),
    "init_params": ("hybridcheck.seed", "init_params"),
    "mixed_train_step": ("hybridcheck.seed", "mixed_train_step"),
    "train_step": ("hybridcheck.seed", "train_step"),
    "TraceCounter": ("hybridcheck.describe.tracing", "TraceCounter"),
    "count_compiles": ("hybridcheck.describe.tracing", "count_compiles"),
    "verify": ("hybridcheck.engine.verify", "verify"),
}

# Module paths the README documented before the package took its layered layout
# (see "How it is built"): users' noxfiles, conftests and imports keep working. Each
# resolves to the one module object that now holds the code (never a second copy).
_MOVED = {
    "hybridcheck.cli": "hybridcheck.entrypoints.cli",
    "hybridcheck.matrix": "hybridcheck.entrypoints.matrix",
    "hybridcheck.pairs": "hybridcheck.entrypoints.pairs",
    "hybridcheck.pytest_plugin": "hybridcheck.entrypoints.pytest_plugin",
    "hybridcheck.profiles": "hybridcheck.engine.profiles",
    "hybridcheck.registry": "hybridcheck.invariants.registry",
    "hybridcheck.strategies": "hybridcheck.describe.strategies",
    "hybridcheck.mutants": "hybridcheck.cases.mutants",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``hybridcheck.<old path>`` as the module now at its new path."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module: Any) -> None:
        pass  # already executed under its new name


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())

try:
    __version__ = version("hybridcheck")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        if attr is not None:  # not a submodule (``from hybridcheck import compat``)
            # The registry first: a case checks its extra_checks' names against it.
            importlib.import_module("hybridcheck.invariants")
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    # ``invariant_tests`` lives in the pytest plugin, which imports pytest: loaded on
    # first use so that `import hybridcheck` (the CLI, a notebook) does not need it.
    if name == "invariant_tests":
        from hybridcheck.entrypoints.pytest_plugin import invariant_tests

        return invariant_tests
    raise AttributeError(f"module 'hybridcheck' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CaseReport",
    "HybridCase",
    "HybridParams",
    "InvariantNotApplicable",
    "InvariantResult",
    "Localisation",
    "MigrationCase",
    "PROFILES",
    "Proposal",
    "REGISTRY",
    "Report",
    "TraceCounter",
    "UserCodeError",
    "assert_all_finite",
    "assert_convert_covers_every_param",
    "assert_deterministic",
    "assert_every_half_gets_gradient",
    "assert_every_trainable_is_trained",
    "assert_grads_match_before",
    "assert_grads_match_finite_differences",
    "assert_grads_match_params",
    "assert_inputs_unchanged",
    "assert_jit_matches_eager",
    "assert_loss_decrease_first_order",
    "assert_loss_distribution_matches_before",
    "assert_loss_matches_before",
    "assert_randomness_is_used",
    "assert_retrace_budget",
    "assert_roundtrip",
    "assert_sgd_update",
    "assert_sharded_matches_single_device",
    "assert_sharding_matches_before",
    "assert_state_is_threaded",
    "assert_step_uses_batch",
    "assert_step_matches_before",
    "assert_trajectory_matches_before",
    "assert_update_changes_exactly_graded_leaves",
    "assert_update_is_descent",
    "assert_update_matches_tx",
    "compat",
    "count_compiles",
    "from_linen",
    "from_nnx",
    "init_params",
    "invariant_tests",
    "invariants",
    "localise",
    "mixed_train_step",
    "propose_convert",
    "seed",
    "sgd_step",
    "strategies",
    "train_step",
    "verify",
]
