"""from_nnx / from_linen arguments: refused before the model runs, naming the argument
and what to pass instead (a HybridCase field they make themselves, an option that is
no field, a model instance for a model function, a ToNNX never initialised)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax.training import train_state
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.flaxmodels.functionalize import from_linen, from_nnx

pytestmark = pytest.mark.skipif(not compat.HAS_BRIDGE, reason="needs flax.nnx.bridge")

BATCHES = hnp.arrays(
    np.float32, (4, 3), elements={"min_value": -2, "max_value": 2}
).map(lambda a: (a[:, :2], a[:, 2:]))


class Model(nnx.Module):  # an NNX encoder feeding a Linen head
    def __init__(self, rngs: Any) -> None:
        self.encoder = nnx.Linear(2, 3, rngs=rngs)
        self.head = nnx.bridge.ToNNX(nn.Dense(1), rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.head(nnx.gelu(self.encoder(x)))


def model_fn(rngs: Any) -> Any:
    return nnx.bridge.lazy_init(Model(rngs), jnp.ones((1, 2)))


def nnx_loss(model: Any, batch: Any) -> Any:
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


def nnx_step(model: Any, optimizer: Any, batch: Any) -> None:
    optimizer.update(model, nnx.grad(nnx_loss)(model, batch))


NNX = {
    "model_fn": model_fn,
    "loss_fn": nnx_loss,
    "train_step": nnx_step,
    "tx": optax.sgd,
    "batches": BATCHES,
}


def _never(*args: Any) -> Any:
    raise AssertionError("the user's code ran before the argument was refused")


def _adam(model: Any, lr: Any) -> Any:
    return nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)


NNX_ROWS: list[tuple[dict[str, Any], type, str]] = [
    ({"loss": len}, TypeError, r"from_nnx got loss=.*pass loss_fn=\.\.\. instead"),
    ({"init": len}, TypeError, r"got init=.*pass model_fn=\.\.\. instead of init"),
    ({"step": len}, TypeError, r"got step=.*pass train_step=\.\.\. instead"),
    ({"non_trainable": ("x",)}, TypeError, r"non_trainable=.*pass frozen="),
    ({"sdg": True}, TypeError, r"unexpected argument 'sdg'.*'frozen'"),
    ({"batches": None}, TypeError, r"batches must be .*got NoneType None; wrap"),
    ({"batches": [1, 2]}, TypeError, r"batches must be .*st\.sampled_from"),
    ({"stochastic": "yes"}, TypeError, r"stochastic must be True, False or None"),
    ({"sgd": "no"}, TypeError, r"\.sgd must be True, False or None, got str 'no'"),
    ({"frozen": True}, TypeError, r"\.frozen must be a function"),
    ({"param_seeds": "8"}, TypeError, r"\.param_seeds must be an int"),
    ({"lr": "0.1"}, TypeError, r"\.lr must be a number"),
    ({"rng_halves": "rng"}, TypeError, r"\.rng_halves must be a tuple"),
    ({"description": 3}, TypeError, r"\.description must be a str"),
    ({"tx": None}, TypeError, r"from_nnx needs the optimizer: optimizer_fn=lambda"),
    ({"optimizer_fn": _adam}, TypeError, r"got both tx= and optimizer_fn="),
    (
        {"tx": None, "optimizer_fn": _adam, "wrt": nnx.Param},
        TypeError,
        r"got wrt=\.\.\. beside optimizer_fn=: your optimizer_fn already says it",
    ),
    ({"tx": None, "optimizer_fn": 3}, TypeError, r"optimizer_fn must be a function"),
    (
        {"tx": None, "optimizer_fn": lambda model, lr: optax.adam(lr)},
        TypeError,
        r"optimizer_fn\(model, lr\) must return an nnx.Optimizer",
    ),
]


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    NNX_ROWS,
    ids=[next(iter(c)) + f"-{i}" for i, (c, _, _) in enumerate(NNX_ROWS)],
)
def test_from_nnx_arguments_are_named(
    changes: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        from_nnx("tiny-nnx", **{**NNX, **changes})
    assert "\n" not in str(caught.value)
    assert "multiple values" not in str(caught.value)


@pytest.mark.parametrize("field", ["loss", "init", "step", "non_trainable"])
def test_a_field_from_nnx_makes_is_refused_before_the_model_runs(field: str) -> None:
    arguments = {**NNX, "model_fn": _never, "loss_fn": _never, field: len}
    with pytest.raises(TypeError, match=rf"got {field}="):
        from_nnx("tiny-nnx", **arguments)


def test_a_model_instance_is_not_a_model_function() -> None:
    with pytest.raises(TypeError, match=r"model_fn must be a function rngs") as caught:
        from_nnx("tiny-nnx", **{**NNX, "model_fn": Model(nnx.Rngs(0))})
    assert "the Model instance itself" in str(caught.value)
    assert "lazy_init(Model(rngs)" in str(caught.value)


def test_a_to_nnx_without_lazy_init_is_named() -> None:
    with pytest.raises(ValueError, match=r"model_fn returned .*\['head'\]") as caught:
        from_nnx("tiny-nnx", **{**NNX, "model_fn": Model})
    message = str(caught.value)
    assert "never ran its Linen module" in message
    assert "bridge.lazy_init" in message
    assert "put a Linen module" not in message


def test_valid_from_nnx_arguments_still_construct() -> None:
    case = from_nnx(
        "tiny-nnx",
        **NNX,
        frozen=lambda half, path: False,
        extra_checks={"mine": lambda p, b, lr: None},
        param_seeds=2,
        lr=st.just(0.05),
        sgd=True,
        description="tiny",
    )
    assert case.param_seeds == 2
    assert set(case.extra_checks) == {"mine"}
    # A plain NNX model (no bridge) is fine too: one half, a migration side.
    plain = from_nnx("plain", **{**NNX, "model_fn": lambda r: nnx.Linear(2, 1, rngs=r)})
    assert plain.name == "plain"


def linen_loss(variables: Any, batch: Any, rngs: Any) -> Any:
    x, y = batch
    return jnp.mean((nn.Dense(1).apply(variables, x) - y) ** 2)


LINEN = {
    "module": nn.Dense(1),
    "loss_fn": linen_loss,
    "train_step": lambda state, batch: state,
    "tx": optax.sgd,
    "init_args": (jnp.ones((1, 2)),),
    "batches": BATCHES,
}


def _create(variables: Any, lr: Any) -> Any:
    return train_state.TrainState.create(
        apply_fn=nn.Dense(1).apply, params=variables["params"], tx=optax.sgd(lr)
    )


LINEN_ROWS: list[tuple[dict[str, Any], type, str]] = [
    ({"loss": len}, TypeError, r"from_linen got loss=.*pass loss_fn=\.\.\. instead"),
    ({"init": len}, TypeError, r"pass module=\.\.\. instead of init"),
    ({"non_trainable": ("x",)}, TypeError, r"non_trainable=.*pass frozen="),
    ({"batches": None}, TypeError, r"from_linen: batches must be"),
    ({"module": nn.Dense}, TypeError, r"module=Dense\(\.\.\.\), an instance"),
    ({"init_kwargs": "train"}, TypeError, r"init_kwargs must be a dict"),
    ({"rngs": 3}, TypeError, r"rngs must be a function or None, got int 3"),
    ({"make_state": 3}, TypeError, r"make_state must be a function or None"),
    ({"tx": None}, TypeError, r"from_linen needs the optimizer: train_state_fn="),
    ({"train_state_fn": _create}, TypeError, r"got both tx= and train_state_fn="),
    (
        {"tx": None, "train_state_fn": _create, "make_state": _create},
        TypeError,
        r"got make_state=\.\.\. beside train_state_fn=",
    ),
    (
        {"tx": None, "train_state_fn": lambda variables, lr: variables},
        TypeError,
        r"train_state_fn\(variables, lr\) must return a train state",
    ),
]


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    LINEN_ROWS,
    ids=[next(iter(c)) + f"-{i}" for i, (c, _, _) in enumerate(LINEN_ROWS)],
)
def test_from_linen_arguments_are_named(
    changes: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        from_linen("tiny-linen", **{**LINEN, **changes})
    assert "\n" not in str(caught.value)
