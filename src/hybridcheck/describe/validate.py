"""Input validation for the public entry points: clear errors, nothing half-computed."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import numpy as np

# Seeds travel into the jitted init as traced int32 values so that one compilation
# serves every seed. Without x64, ``jax.random.PRNGKey`` silently keeps only the low
# 32 bits of a larger Python int (PRNGKey(2**40) == PRNGKey(0)), so anything beyond
# int32 would alias another seed. The step also uses ``seed + 1``, hence the ``- 2``.
MAX_SEED = 2**31 - 2


def check_seed(seed: Any, *, name: str = "seed") -> int:
    """Returns ``seed`` as a Python int or raises ``TypeError``/``ValueError``."""
    value = _concrete_scalar(seed, name)
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integral number, got bool {value!r}")
    if not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be an integral number (int, or float like 3.0), "
            f"got {type(seed).__name__} {seed!r}"
        )
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite integral number, got {value!r}")
    if float(value) != math.floor(float(value)):
        raise ValueError(
            f"{name} must be an integral value (like 3 or 3.0), got {value!r}"
        )
    as_int = int(float(value))
    if not 0 <= as_int <= MAX_SEED:
        raise ValueError(
            f"{name} must be in [0, {MAX_SEED}] (a non-negative int32, because the "
            f"step also uses {name} + 1 and jax.random.PRNGKey keeps only 32 bits), "
            f"got {as_int}"
        )
    return as_int


def check_lr(lr: Any, *, name: str = "lr") -> float:
    """Returns ``lr`` as a Python float or raises ``TypeError``/``ValueError``."""
    value = _concrete_scalar(lr, name)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number (the SGD step size), "
            f"got {type(lr).__name__} {lr!r}"
        )
    as_float = float(value)
    if not math.isfinite(as_float) or as_float <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {as_float!r}")
    return as_float


def check_batch(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validates a ``(x, y)`` pair and returns both as float32 NumPy arrays.

    Accepts 1-D ``x`` (in,) with 1-D ``y`` (out,), or 2-D ``x`` (N, in) with 2-D
    ``y`` (N, out). Integer arrays are cast to float32.
    """
    x_arr = _as_float_array(x, "x")
    y_arr = _as_float_array(y, "y")
    if x_arr.ndim != y_arr.ndim:
        raise ValueError(
            "x and y must both be 1-D (one example) or both 2-D (a batch), got "
            f"x.shape={x_arr.shape} and y.shape={y_arr.shape}"
        )
    if x_arr.ndim == 2 and x_arr.shape[0] != y_arr.shape[0]:
        raise ValueError(
            "x and y must have the same batch size (first axis), got "
            f"x.shape={x_arr.shape} and y.shape={y_arr.shape}"
        )
    return x_arr, y_arr


def _as_float_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} must be a concrete array, got a JAX tracer: mixed_train_step "
            "validates values on the host and cannot run under jit/grad/vmap; "
            "jit hybridcheck.train_step instead."
        )
    if isinstance(value, str | bytes):
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - re-raised as a clear TypeError
        raise TypeError(
            f"{name} must be an array-like of numbers, got {type(value).__name__}: "
            f"{exc}"
        ) from exc
    kind = arr.dtype.kind
    if kind == "b":
        raise TypeError(f"{name} must be a numeric array, got dtype bool")
    if kind == "c":
        raise TypeError(
            f"{name} must be a real array, got complex dtype {arr.dtype}; "
            "pass the real part explicitly if that is what you mean"
        )
    if kind not in "iuf":
        raise TypeError(
            f"{name} must be a real numeric array (float or int), got dtype {arr.dtype}"
        )
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be 1-D (features,) or 2-D (batch, features), "
            f"got {arr.ndim}-D with shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be finite, found {int(bad.sum())} NaN/Inf value(s), "
            f"the first at index {where}: {arr[where]!r}"
        )
    return arr


def _concrete_scalar(value: Any, name: str) -> Any:
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} must be a concrete number, got a JAX tracer; jit "
            "hybridcheck.train_step instead of mixed_train_step"
        )
    if isinstance(value, np.ndarray | jax.Array):
        if np.ndim(value) != 0:
            raise TypeError(
                f"{name} must be a scalar, got an array of shape {np.shape(value)}"
            )
        return np.asarray(value).item()
    return value
