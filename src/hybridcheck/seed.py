"""The founding problem: the seed's mixed Linen + NNX model and training step.

The trick (see README): an ``nnx.Linear``'s parameters are pulled out as a plain dict
and treated as a peer of the Linen ``nn.Dense`` params; the forward is a pure function
of both pytrees, so one ``jax.grad(..., argnums=(0, 1))`` differentiates both halves
and SGD updates both.

Everything here is a pure function of arrays. Module objects are built outside the
jitted path (``nn.Dense`` is rebuilt from static shapes during tracing), and seed and
learning rate enter the jitted functions as traced values, so repeated calls with the
same shapes compile once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybridcheck import compat
from hybridcheck.compat import nnx
from hybridcheck.describe import validate as _validate
from hybridcheck.describe._typing import Array, ArrayLike, Params
from hybridcheck.describe.validate import MAX_SEED

__all__ = [
    "HIDDEN",
    "MAX_SEED",
    "HybridParams",
    "StepResult",
    "init_params",
    "forward",
    "loss",
    "batch_loss",
    "grads",
    "sgd_update",
    "train_step",
    "mixed_train_step",
]

HIDDEN = 4
"""Width of the seed model's hidden layer (the ``nnx.Linear`` output)."""


class HybridParams(NamedTuple):
    """The two halves' parameters, each a plain pytree of arrays.

    Attributes:
      nnx: ``{'kernel': (in, hidden), 'bias': (hidden,)}`` pulled out of nnx.Linear.
      linen: the Linen ``nn.Dense`` variables, ``{'params': {'kernel', 'bias'}}``.
    """

    nnx: Params
    linen: Params


class StepResult(NamedTuple):
    """What :func:`train_step` returns.

    Attributes:
      params: the updated parameters of both halves.
      loss_before: loss at the input parameters.
      loss_after: loss at the updated parameters.
      grads: the gradient of the loss for each half (same structure as ``params``).
    """

    params: HybridParams
    loss_before: Array
    loss_after: Array
    grads: HybridParams


def _init(seed: Array, in_features: int, out_features: int) -> HybridParams:
    nnx_linear = nnx.Linear(
        in_features=in_features, out_features=HIDDEN, rngs=compat.rngs_from_seed(seed)
    )
    nnx_params = {
        "kernel": compat.variable_array(nnx_linear.kernel),
        "bias": compat.variable_array(nnx_linear.bias),
    }
    linen_dense = nn.Dense(features=out_features)
    linen_params = linen_dense.init(
        jax.random.PRNGKey(seed + 1), jnp.zeros((HIDDEN,), jnp.float32)
    )
    return HybridParams(nnx=nnx_params, linen=linen_params)


_init_jit = jax.jit(_init, static_argnums=(1, 2))


def init_params(seed: ArrayLike, in_features: int, out_features: int) -> HybridParams:
    """Initialises the seed model: ``nnx.Linear(in, 4)`` then Linen ``Dense(out)``.

    The nnx layer is built with ``nnx.Rngs(seed)``, the Linen layer initialised with
    ``jax.random.PRNGKey(seed + 1)`` on a dummy hidden vector, exactly as in the
    seed. ``seed`` is traced (int32): one compilation per ``(in, out)`` pair.

    Args:
      seed: an integer in ``[0, MAX_SEED]`` (Python int or int array).
      in_features: input width (static).
      out_features: output width (static).

    Returns:
      ``HybridParams(nnx={'kernel', 'bias'}, linen={'params': {...}})``.
    """
    return _init_jit(jnp.asarray(seed, jnp.int32), int(in_features), int(out_features))


def _affine(kernel: Array, bias: Array, x: Array) -> Array:
    # Reshape the bias explicitly so the step also runs under
    # jax_numpy_rank_promotion="raise" (batched x is (N, in)).
    out = x @ kernel
    return out + jnp.reshape(bias, (1,) * (out.ndim - 1) + (-1,))


def forward(params: HybridParams, x: Array) -> Array:
    """The hybrid forward: nnx-style affine, ReLU, then the Linen Dense.

    The nnx half is unrolled by hand (``x @ kernel + bias``) because we differentiate
    the dict of arrays, not the nnx Module. The Linen module is stateless and rebuilt
    from the (static) kernel shape; only ``params.linen`` carries trainable state.
    """
    hidden = jax.nn.relu(_affine(params.nnx["kernel"], params.nnx["bias"], x))
    out_features = params.linen["params"]["kernel"].shape[-1]
    out: Array = nn.Dense(features=out_features).apply(params.linen, hidden)  # type: ignore[assignment]
    return out


def loss(params: HybridParams, x: Array, y: Array) -> Array:
    """Mean squared error over every element (batch and output features)."""
    return jnp.mean((forward(params, x) - y) ** 2)


def grads(params: HybridParams, x: Array, y: Array) -> HybridParams:
    """Gradients of :func:`loss` w.r.t. both halves, in one backward pass.

    ``argnums=(0, 1)`` is the point: the default (0) would silently give only the
    nnx half's gradient.
    """

    def loss_of_halves(nnx_params: Params, linen_params: Params) -> Array:
        return loss(HybridParams(nnx_params, linen_params), x, y)

    g_nnx, g_linen = jax.grad(loss_of_halves, argnums=(0, 1))(params.nnx, params.linen)
    return HybridParams(nnx=g_nnx, linen=g_linen)


def batch_loss(params: HybridParams, batch: tuple[Array, Array]) -> Array:
    """:func:`loss` with the batch as one argument, ``batch = (x, y)``: the form a
    :class:`hybridcheck.HybridCase` takes."""
    x, y = batch
    return loss(params, x, y)


def sgd_update(
    params: HybridParams, grads: HybridParams, lr: ArrayLike
) -> HybridParams:
    """``p - lr * g`` leaf by leaf, on both halves."""
    lr = jnp.asarray(lr)

    def update(p: Array, g: Array) -> Array:
        return p - lr.astype(p.dtype) * g

    return jax.tree_util.tree_map(update, params, grads)


@jax.jit
def train_step(params: HybridParams, x: Array, y: Array, lr: ArrayLike) -> StepResult:
    """One SGD step on both halves; jitted, ``lr`` traced.

    Args:
      params: both halves' parameters (see :func:`init_params`).
      x: ``(in,)`` or ``(N, in)`` inputs.
      y: ``(out,)`` or ``(N, out)`` targets.
      lr: learning rate (a scalar; traced, so varying it does not recompile).

    Returns:
      A :class:`StepResult` with new params, loss before/after and both gradients.
    """
    loss_before = loss(params, x, y)
    g = grads(params, x, y)
    new_params = sgd_update(params, g, lr)
    loss_after = loss(new_params, x, y)
    return StepResult(new_params, loss_before, loss_after, g)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _seed_step(
    seed: Array, x: Array, y: Array, in_features: int, out_features: int, lr: Array
) -> Array:
    result = train_step(_init(seed, in_features, out_features), x, y, lr)
    return jnp.stack([result.loss_before, result.loss_after]).astype(jnp.float32)


def mixed_train_step(
    seed: ArrayLike, x: ArrayLike, y: ArrayLike, lr: ArrayLike
) -> Array:
    """The seed problem: build the hybrid model, take one SGD step on both halves.

    Args:
      seed: integral value (int or float like ``3.0``) in ``[0, MAX_SEED]``.
      x: ``(in,)`` or ``(N, in)`` real array (ints are cast to float32).
      y: ``(out,)`` or ``(N, out)`` real array; same batch size as ``x``.
      lr: finite learning rate ``> 0``.

    Returns:
      ``float32[2]``: ``[loss_before, loss_after]``.

    Raises:
      TypeError: wrong kind of argument (bool/complex/str arrays, non-number lr/seed).
      ValueError: wrong shape, empty, non-finite values, lr <= 0, seed out of range.

    Example:
      >>> import jax.numpy as jnp
      >>> out = mixed_train_step(0.0, jnp.ones(3), jnp.zeros(2), 0.1)
      >>> out.shape
      (2,)
    """
    seed_int = _validate.check_seed(seed)
    lr_float = _validate.check_lr(lr)
    x_arr, y_arr = _validate.check_batch(x, y)
    return _seed_step(
        jnp.asarray(seed_int, jnp.int32),
        jnp.asarray(x_arr),
        jnp.asarray(y_arr),
        int(x_arr.shape[-1]),
        int(y_arr.shape[-1]),
        jnp.asarray(lr_float, jnp.float32),
    )
