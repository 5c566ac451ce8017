"""hybridcheck: property-based verification of hybrid Flax Linen + NNX training."""

from importlib.metadata import PackageNotFoundError, version

from hybridcheck import compat
from hybridcheck.step import (
    HIDDEN,
    HybridParams,
    StepResult,
    forward,
    grads,
    init_params,
    loss,
    mixed_train_step,
    sgd_update,
    train_step,
)

try:
    __version__ = version("hybridcheck")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "HIDDEN",
    "HybridParams",
    "StepResult",
    "compat",
    "forward",
    "grads",
    "init_params",
    "loss",
    "mixed_train_step",
    "sgd_update",
    "train_step",
]
