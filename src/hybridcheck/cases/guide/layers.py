"""The guide's own layers, shared by several families and not counted as user code.

``LinenDot``, ``NNXDot``, ``LinenMultiCollections`` (params, a ``counter``
collection and a sown value) and ``NNXMultiCollections`` (Param, LoRA and a
``Count`` variable), as the guide writes them.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from hybridcheck.compat import nnx


class LinenDot(nn.Module):
    out_dim: int

    @nn.compact
    def __call__(self, x: Any) -> Any:
        w = self.param("w", nn.initializers.lecun_normal(), (x.shape[-1], self.out_dim))
        return x @ w


class NNXDot(nnx.Module):
    def __init__(self, din: int, dout: int, rngs: Any) -> None:
        self.w = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (din, dout)))

    def __call__(self, x: Any) -> Any:
        return x @ self.w


class LinenMultiCollections(nn.Module):
    out_dim: int

    @nn.compact
    def __call__(self, x: Any) -> Any:
        w = self.param("w", nn.initializers.lecun_normal(), (x.shape[-1], self.out_dim))
        b = self.param("b", nn.zeros_init(), (1, self.out_dim))
        count = self.variable("counter", "count", lambda: jnp.zeros((), jnp.int32))
        if not self.is_initializing():
            count.value += 1
        y = x @ w + b
        self.sow("intermediates", "dot_sum", jnp.sum(y))
        return y


class Count(nnx.Variable):  # to_linen names its collection after the class
    pass


class NNXMultiCollections(nnx.Module):
    def __init__(self, din: int, dout: int, rngs: Any) -> None:
        self.w = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (din, dout)))
        self.lora = nnx.LoRA(din, 2, dout, rngs=rngs)
        self.count = Count(jnp.array(0))

    def __call__(self, x: Any) -> Any:
        self.count[...] += 1
        return x @ self.w + self.lora(x)
