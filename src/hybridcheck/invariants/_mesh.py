"""Running a step data-parallel over several devices (forced host CPUs suffice)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hybridcheck.describe.trees import InvariantNotApplicable

__all__ = ["device_mesh", "run_data_parallel", "run_partitioned"]

FORCE_DEVICES_HINT = (
    "set XLA_FLAGS=--xla_force_host_platform_device_count=4 before JAX is imported "
    "(`nox -s multidevice` does)"
)


def run_data_parallel(
    step: Callable[..., Any],
    params: Any,
    batch: Any,
    *args: Any,
    n_devices: int | None = None,
) -> Any:
    """Runs ``jax.jit(step)(params, batch, *args)`` with the batch sharded on axis 0.

    Params and ``args`` are replicated; every batch leaf is split along its first
    axis over a 1-D ``('data',)`` mesh of ``n_devices`` (default: all, capped at the
    largest count that divides the batch).

    Raises:
      InvariantNotApplicable: fewer than 2 devices, or a batch that cannot be split.
    """
    devices = jax.devices()
    if len(devices) < 2:
        raise InvariantNotApplicable(
            f"only {len(devices)} device; {FORCE_DEVICES_HINT}"
        )
    leaves = [leaf for leaf in jax.tree.leaves(batch) if np.ndim(leaf) >= 1]
    # The batch axis is the leading axis of the first leaf of rank >= 2 (data such as
    # (B, F) or (B, T)); rank-1 leaves of another length (a raw PRNG key) replicate.
    ranked = [leaf for leaf in leaves if np.ndim(leaf) >= 2]
    if not ranked:
        raise InvariantNotApplicable(
            "unbatched example: no array of rank >= 2 to split along a batch axis"
        )
    size = int(np.shape(ranked[0])[0])
    n = n_devices or max(d for d in range(1, len(devices) + 1) if size % d == 0)
    if n < 2 or size % n:
        raise InvariantNotApplicable(
            f"batch size {size} does not split over {len(devices)} devices"
        )
    mesh = Mesh(np.array(devices[:n]), ("data",))
    data = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded_batch = jax.tree.map(
        lambda leaf: jax.device_put(
            leaf,
            data if np.ndim(leaf) >= 1 and np.shape(leaf)[0] == size else replicated,
        ),
        batch,
    )
    rep_params = jax.device_put(params, replicated)
    rep_args = jax.device_put(args, replicated)
    return jax.jit(step)(rep_params, sharded_batch, *rep_args)


def device_mesh(axes: list[str], *, axis_size: int = 2) -> Mesh:
    """A mesh over the first devices with ``axis_size`` devices on each of ``axes``
    while the devices last (the remaining axes get 1).

    Raises:
      InvariantNotApplicable: fewer than 2 devices.
    """
    devices = jax.devices()
    if len(devices) < 2:
        raise InvariantNotApplicable(
            f"only {len(devices)} device; {FORCE_DEVICES_HINT}"
        )
    shape, used = [], 1
    for _ in axes:
        size = axis_size if used * axis_size <= len(devices) else 1
        shape.append(size)
        used *= size
    return Mesh(np.array(devices[:used]).reshape(shape), tuple(axes))


def run_partitioned(
    step: Callable[..., Any],
    params: Any,
    specs: list[PartitionSpec],
    mesh: Mesh,
    *args: Any,
) -> Any:
    """Runs ``step(params, *args)`` with each params leaf placed per its spec.

    ``specs`` has one PartitionSpec per leaf of ``params`` (in leaf order, over
    ``mesh``'s axes); ``args`` (the batch, the learning rate) are replicated.
    ``step`` should be a jitted function (it recompiles per placement only once).

    Raises:
      InvariantNotApplicable: a leaf cannot be placed (a dimension the mesh axes
        do not divide).
    """
    flat, treedef = jax.tree.flatten(params)
    try:
        placed = [
            jax.device_put(leaf, NamedSharding(mesh, spec))
            for leaf, spec in zip(flat, specs, strict=True)
        ]
    except ValueError as exc:
        raise InvariantNotApplicable(
            f"a parameter cannot be placed on the {dict(mesh.shape)} mesh: {exc}"
        ) from exc
    replicated = jax.device_put(args, NamedSharding(mesh, PartitionSpec()))
    return step(jax.tree.unflatten(treedef, placed), *replicated)
