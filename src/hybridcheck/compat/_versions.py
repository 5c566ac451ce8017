"""Which JAX and Flax are installed, what they support, and how to enable x64.

``nnx`` is imported here, after the version guard, and re-exported by the package.
"""

from __future__ import annotations

import re
from typing import Any

import flax
import jax


def version_tuple(version: str) -> tuple[int, ...]:
    """Parses ``"0.12.8"`` (or ``"0.10.0rc1"``, ``"0.4.35.dev2"``) into ``(0, 12, 8)``.

    Raises:
      ValueError: if ``version`` does not start with a dotted number.
    """
    match = re.match(r"^(\d+(?:\.\d+)*)", version)
    if match is None:
        raise ValueError(
            f"version must start with a dotted number like '0.12.8', got {version!r}"
        )
    return tuple(int(part) for part in match.group(1).split("."))


FLAX_VERSION: tuple[int, ...] = version_tuple(flax.__version__)

# As of Flax 0.8.4 NNX lives at ``flax.nnx``; 0.8.0-0.8.3 had it at
# ``flax.experimental.nnx`` with a different state API, which hybridcheck does not
# support (pyproject's floor is 0.8.4).
HAS_NNX: bool = FLAX_VERSION >= (0, 8, 4)
if not HAS_NNX:  # pragma: no cover - guarded by the dependency floor
    raise ImportError(
        f"hybridcheck needs flax>=0.8.4 (the first release with flax.nnx); "
        f"found flax {flax.__version__}. Upgrade flax together with a matching jax."
    )

from flax import nnx  # noqa: E402, F401, I001  (after the version guard on purpose)


# As of Flax 0.9.0 ``flax.nnx.bridge`` (ToNNX, ToLinen, to_linen, lazy_init) exists.
HAS_BRIDGE: bool = FLAX_VERSION >= (0, 9, 0)

# As of Flax 0.11 (measured 0.11.2 and 0.12.8) a stack of layers is built with
# ``nnx.split_rngs`` + ``nnx.vmap`` and applied with ``nnx.scan(in_axes=(nnx.Carry,
# 0))``; 0.8.5 has neither ``split_rngs`` nor ``Carry`` (0.9-0.10 not measured).
HAS_NNX_SCAN: bool = FLAX_VERSION >= (0, 11, 0)


def feature_support() -> dict[str, str | None]:
    """Maps each optional feature to ``None`` (supported) or why it is not.

    Used by the verifier to report an invariant or case as not applicable on an old
    release instead of silently passing it.
    """
    return {
        "bridge": None
        if HAS_BRIDGE
        else f"flax.nnx.bridge first appears in Flax 0.9.0 (found {flax.__version__})",
        # from_nnx / from_linen build nnx.Optimizer (flax.nnx.training) and read the
        # bridge wrappers: both arrive with Flax 0.9.0.
        "real_models": None
        if HAS_BRIDGE
        else (
            "hc.from_nnx / hc.from_linen need Flax 0.9.0 or newer (nnx.Optimizer, "
            f"nnx.bridge; found {flax.__version__}): describe the model as a "
            "hc.HybridCase (the functional form) on this release"
        ),
    }


def versions() -> dict[str, str]:
    """The installed JAX and Flax releases and the default backend, for reports."""
    return {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "backend": jax.default_backend(),
    }


def enable_x64() -> Any:
    """Returns a context manager under which JAX computes in 64 bits.

    As of JAX 0.8 (roughly) ``jax.enable_x64(True)`` is that context manager and
    ``jax.experimental.enable_x64`` is gone; older JAX has only the experimental one.
    """
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as _enable_x64  # type: ignore[attr-defined]

    return _enable_x64()
