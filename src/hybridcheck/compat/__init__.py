"""Every Flax/JAX release difference hybridcheck relies on, and nothing else.

This package (``hybridcheck.compat``) is the only place that reads
``flax.__version__``/``jax.__version__`` or probes their APIs with ``hasattr``. Each
shim is a thin function named by what it is for; its docstring starts with the
release where the behaviour moved. Submodules: ``_versions`` (what is installed,
x64), ``_variables`` (Variables and State), ``_training`` (Rngs, nnx.Optimizer),
``_bridge`` (ToNNX / ToLinen and Linen collections), ``_sharding`` (declared
partitioning: Linen boxes, NNX Variable metadata), ``_intermediates`` (every module
call of a function, with its path).
"""

from hybridcheck.compat._versions import FLAX_VERSION
from hybridcheck.compat._versions import HAS_BRIDGE
from hybridcheck.compat._versions import HAS_NNX_SCAN
from hybridcheck.compat._versions import HAS_NNX
from hybridcheck.compat._versions import nnx
from hybridcheck.compat._versions import version_tuple
from hybridcheck.compat._versions import feature_support
from hybridcheck.compat._versions import versions
from hybridcheck.compat._versions import enable_x64
from hybridcheck.compat._variables import variable_array
from hybridcheck.compat._variables import params_as_dict
from hybridcheck.compat._variables import replace_params
from hybridcheck.compat._variables import module_with_params
from hybridcheck.compat._variables import module_with_state
from hybridcheck.compat._variables import is_state_variable
from hybridcheck.compat._variables import state_variable_type
from hybridcheck.compat._variables import rng_state_type
from hybridcheck.compat._variables import iter_submodules
from hybridcheck.compat._variables import drop_intermediates
from hybridcheck.compat._variables import module_list
from hybridcheck.compat._training import rngs_from_seed
from hybridcheck.compat._training import make_optimizer
from hybridcheck.compat._training import optimizer_tx
from hybridcheck.compat._training import optimizer_update
from hybridcheck.compat._training import optimizer_state_type
from hybridcheck.compat._training import optimizer_state
from hybridcheck.compat._training import set_optimizer_state
from hybridcheck.compat._bridge import bridge_lazy_init
from hybridcheck.compat._bridge import bridge_wrapper_types
from hybridcheck.compat._bridge import collection_variable_type
from hybridcheck.compat._bridge import linen_trainable
from hybridcheck.compat._bridge import linen_static_collections
from hybridcheck.compat._sharding import NNX_SHARDING_KEY
from hybridcheck.compat._sharding import linen_partition_specs
from hybridcheck.compat._sharding import nnx_partition_specs
from hybridcheck.compat._sharding import nnx_sharding_names
from hybridcheck.compat._sharding import sharding_support
from hybridcheck.compat._sharding import unsharded_variables
from hybridcheck.compat._intermediates import ModuleCall
from hybridcheck.compat._intermediates import intercept_module_calls
from hybridcheck.compat._intermediates import module_call_support

__all__ = [
    "FLAX_VERSION",
    "HAS_BRIDGE",
    "HAS_NNX_SCAN",
    "HAS_NNX",
    "nnx",
    "version_tuple",
    "feature_support",
    "versions",
    "enable_x64",
    "variable_array",
    "params_as_dict",
    "replace_params",
    "module_with_params",
    "module_with_state",
    "is_state_variable",
    "state_variable_type",
    "rng_state_type",
    "iter_submodules",
    "drop_intermediates",
    "module_list",
    "rngs_from_seed",
    "make_optimizer",
    "optimizer_tx",
    "optimizer_update",
    "optimizer_state_type",
    "optimizer_state",
    "set_optimizer_state",
    "bridge_lazy_init",
    "bridge_wrapper_types",
    "collection_variable_type",
    "linen_trainable",
    "linen_static_collections",
    "NNX_SHARDING_KEY",
    "linen_partition_specs",
    "nnx_partition_specs",
    "nnx_sharding_names",
    "sharding_support",
    "unsharded_variables",
    "ModuleCall",
    "intercept_module_calls",
    "module_call_support",
]
