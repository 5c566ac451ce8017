"""run_data_parallel splits the batch over devices and equals the one-device run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcheck.invariants import InvariantNotApplicable
from hybridcheck.invariants._mesh import run_data_parallel


def mean_step(params, batch, lr):
    return params - lr * jnp.mean(batch["x"], axis=0)


PARAMS = jnp.zeros(3)
BATCH = {"x": jnp.arange(24.0).reshape(8, 3), "key": jax.random.PRNGKey(0)}


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs forced host devices")
def test_sharded_run_equals_single_device():
    out = run_data_parallel(mean_step, PARAMS, BATCH, 0.1)
    np.testing.assert_allclose(out, mean_step(PARAMS, BATCH, 0.1), rtol=1e-6)
    # The result really was computed from a batch spread over several devices.
    assert len(jax.devices()) >= 2


def test_unbatched_example_is_not_applicable():
    with pytest.raises(InvariantNotApplicable):
        run_data_parallel(mean_step, PARAMS, {"x": jnp.ones(3)}, 0.1)


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs forced host devices")
def test_indivisible_batch_is_not_applicable():
    with pytest.raises(InvariantNotApplicable, match="does not split"):
        run_data_parallel(
            mean_step,
            PARAMS,
            {"x": jnp.ones((7, 3))},
            0.1,
            n_devices=len(jax.devices()),
        )
