"""The optimizer as the user builds it: ``optimizer_fn`` / ``train_state_fn``, and a
learning rate fixed where the optimizer cannot be built from a traced one."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import linen as nn
from flax.training import train_state
from hypothesis import strategies as st

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.describe.usercode import UserCodeError, call
from hybridcheck.flaxmodels.functionalize import from_linen, from_nnx
from hybridcheck.flaxmodels.optimizers import FIXED_LR, LrPlan, lr_plan
from tests.flaxmodels.test_arguments import LINEN, NNX

pytestmark = pytest.mark.skipif(
    compat.FLAX_VERSION < (0, 11, 0), reason="optimizer.update(model, grads)"
)


def _schedule(lr: Any) -> Any:  # optax checks peak_value == 0.0 in Python
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=2, decay_steps=10)


def test_lr_plan_fixes_an_lr_only_where_a_traced_one_cannot_build() -> None:
    assert lr_plan("c", "tx", lambda lr: optax.adam(lr).init({}), None) == LrPlan(
        None, None
    )
    build = lambda lr: optax.adam(_schedule(lr)).init({})  # noqa: E731
    assert lr_plan("c", "tx", build, None) == LrPlan(FIXED_LR, FIXED_LR)
    assert lr_plan("c", "tx", build, 0.003) == LrPlan(0.003, 0.003)
    users = lambda lr: call("c", "tx", build, lr)  # noqa: E731
    assert lr_plan("c", "tx", users, None).fixed == FIXED_LR
    with pytest.raises(ValueError, match=r"\[c\] lr: tx cannot be built from a traced"):
        lr_plan("c", "tx", build, st.floats(0.01, 0.1))

    def broken(lr: Any) -> Any:
        raise KeyError("mine")

    with pytest.raises(UserCodeError, match="KeyError"):
        lr_plan("c", "tx", lambda lr: call("c", "tx", broken, lr), None)


def test_a_schedule_as_tx_runs_with_a_fixed_lr() -> None:
    case = from_nnx("sched", **{**NNX, "tx": lambda lr: optax.adam(_schedule(lr))})
    assert case.lr == FIXED_LR
    params = case.init(jax.random.PRNGKey(0))
    batch = (jnp.ones((4, 2)), jnp.zeros((4, 1)))
    assert case.step is not None
    assert case.tx is not None
    step = jax.jit(case.step)
    once = step(params, batch, 0.5)  # the drawn lr does not reach the optimizer
    twice = step(once, batch, 0.5)
    assert int(jax.tree.leaves(twice["opt"]["step"])[0]) == 2
    # update_matches_tx's tx: the same schedule, built at the fixed lr
    assert jax.tree.leaves(case.tx(0.5).init({"w": jnp.ones(2)}))


def test_optimizer_fn_is_what_each_step_runs() -> None:
    built: list[Any] = []

    def mine(model: Any, lr: Any) -> Any:
        built.append(lr)
        return nnx.Optimizer(model, optax.sgd(lr, momentum=0.9), wrt=nnx.Param)

    case = from_nnx("mine", **{**NNX, "tx": None, "optimizer_fn": mine})
    assert case.lr is None  # optax.sgd takes a traced lr: drawn
    assert case.sgd is False  # a factory does not say plain SGD
    params = case.init(jax.random.PRNGKey(0))
    flat = jax.tree_util.tree_flatten_with_path(params["opt"]["opt_state"])[0]
    assert any("trace" in jax.tree_util.keystr(path) for path, _ in flat)  # momentum
    built.clear()
    assert case.step is not None
    jax.jit(case.step)(params, (jnp.ones((4, 2)), jnp.zeros((4, 1))), 0.1)
    assert built  # the user's construction ran inside the step


def test_train_state_fn_is_the_users_train_state_create() -> None:
    def create(variables: Any, lr: Any) -> Any:
        return train_state.TrainState.create(
            apply_fn=nn.Dense(1).apply,
            params=variables["params"],
            tx=optax.adamw(_schedule(lr), weight_decay=1e-3),
        )

    case = from_linen("mine", **{**LINEN, "tx": None, "train_state_fn": create})
    assert case.lr == FIXED_LR
    assert case.sgd is False
    params = case.init(jax.random.PRNGKey(0))
    assert set(params["opt"]) == {"step", "opt_state"}
    state = create({"params": params["linen"]}, FIXED_LR)
    assert case.tx is not None
    ours = jax.tree.structure(case.tx(FIXED_LR).init(params["linen"]))
    assert str(ours) == str(jax.tree.structure(state.opt_state))
