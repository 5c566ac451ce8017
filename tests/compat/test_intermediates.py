"""compat.intercept_module_calls: every Linen and NNX module call with its path, on
every release the matrix installs (the bridge's wrappers from Flax 0.9)."""

from __future__ import annotations

import threading
from typing import Any

import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn

from hybridcheck import compat

nnx = compat.nnx


def _calls(fn: Any, *args: Any) -> list[tuple[str, str, str, int]]:
    """``(framework, path, class, depth)`` of each module call, as they return."""
    seen: list[tuple[str, str, str, int]] = []

    def hook(call: Any, call_next: Any, a: Any, k: Any) -> Any:
        out = call_next(*a, **k)
        seen.append((call.framework, "/".join(call.path), call.type_name, call.depth))
        return out

    with compat.intercept_module_calls(hook):
        fn(*args)
    return seen


class _Block(nnx.Module):
    def __init__(self, rngs: Any) -> None:
        self.norm = nnx.LayerNorm(3, rngs=rngs)
        self.layers = nnx.Sequential(nnx.Linear(3, 3, rngs=rngs), nnx.relu)

    def __call__(self, x: Any) -> Any:
        return self.layers(self.norm(x))


class _Scaled(nnx.Linear):
    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return 2.0 * super().__call__(inputs, *args, **kwargs)


def test_nnx_calls_have_attribute_paths_in_their_caller():
    block, x = _Block(nnx.Rngs(0)), jnp.ones((2, 3))
    assert _calls(block, x) == [
        ("nnx", "norm", "LayerNorm", 1),
        ("nnx", "layers/layers/0", "Linear", 2),  # Sequential's own .layers
        ("nnx", "layers", "Sequential", 1),
        ("nnx", "", "_Block", 0),
    ]


def test_a_function_holding_the_model_gives_its_attribute_paths():
    block, x = _Block(nnx.Rngs(0)), jnp.ones((2, 3))

    def forward(m: Any, x: Any) -> Any:  # no __call__ of the root runs
        return m.norm(x)

    assert _calls(forward, block, x) == [("nnx", "norm", "LayerNorm", 0)]


def test_super_call_is_one_call():
    layer = _Scaled(3, 3, rngs=nnx.Rngs(0))
    assert _calls(layer, jnp.ones((2, 3))) == [("nnx", "", "_Scaled", 0)]


class _Linen(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        return nn.Dense(3, name="out")(nn.LayerNorm(name="norm")(x))


def test_linen_calls_have_their_module_paths():
    x = jnp.ones((2, 3))
    variables = _Linen().init(jax.random.PRNGKey(0), x)
    assert _calls(_Linen().apply, variables, x) == [
        ("linen", "norm", "LayerNorm", 1),
        ("linen", "out", "Dense", 1),
        ("linen", "", "_Linen", 0),
    ]


def test_the_classes_are_restored_and_other_threads_are_not_seen():
    original = vars(nnx.Linear)["__call__"]
    layer, x = nnx.Linear(3, 3, rngs=nnx.Rngs(0)), jnp.ones((2, 3))
    other: list[Any] = []

    def hook(call: Any, call_next: Any, a: Any, k: Any) -> Any:
        other.append(threading.current_thread().name)
        return call_next(*a, **k)

    with compat.intercept_module_calls(hook):
        assert vars(nnx.Linear)["__call__"] is not original
        worker = threading.Thread(target=layer, args=(x,), name="other")
        worker.start()
        worker.join()
        layer(x)
        with (
            pytest.raises(RuntimeError, match="already active"),
            compat.intercept_module_calls(hook),
        ):
            pass
    assert vars(nnx.Linear)["__call__"] is original
    assert other == [threading.current_thread().name]


@pytest.mark.skipif(not compat.HAS_BRIDGE, reason="flax.nnx.bridge is Flax 0.9+")
def test_a_linen_module_inside_to_nnx_is_under_its_wrapper():
    from flax.nnx import bridge

    class Outer(nnx.Module):
        def __init__(self) -> None:
            self.enc = bridge.ToNNX(_Linen(), rngs=nnx.Rngs(0))

        def __call__(self, x: Any) -> Any:
            return self.enc(x)

    x = jnp.ones((2, 3))
    model = Outer()
    compat.bridge_lazy_init(model.enc, x)
    assert _calls(model, x) == [
        ("linen", "enc/norm", "LayerNorm", 3),
        ("linen", "enc/out", "Dense", 3),
        ("linen", "enc", "_Linen", 2),
        ("nnx", "enc", "ToNNX", 1),
        ("nnx", "", "Outer", 0),
    ]


@pytest.mark.skipif(not compat.HAS_BRIDGE, reason="flax.nnx.bridge is Flax 0.9+")
def test_an_nnx_module_inside_to_linen_is_under_its_wrapper():
    from flax.nnx import bridge

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            return bridge.to_linen(nnx.Linear, 3, 2, name="lin")(x)

    x = jnp.ones((2, 3))
    variables = Outer().init(jax.random.PRNGKey(0), x)
    calls = _calls(Outer().apply, variables, x)
    assert ("nnx", "lin", "Linear", 2) in calls, calls
    assert calls[-1] == ("linen", "", "Outer", 0)


@pytest.mark.skipif(
    compat.FLAX_VERSION < (0, 11), reason="nnx.split_rngs + nnx.scan(nnx.Carry)"
)
def test_a_layer_under_nnx_scan_has_the_path_of_its_stack():
    class Stack(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            @nnx.split_rngs(splits=2)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def make(rngs: Any) -> Any:
                return _Block(rngs)

            self.layers = make(rngs)

        def __call__(self, x: Any) -> Any:
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def apply(x: Any, block: Any) -> Any:
                return block(x)

            return apply(x, self.layers)

    calls = _calls(Stack(nnx.Rngs(0)), jnp.ones((2, 3)))
    assert ("nnx", "layers/norm", "LayerNorm", 2) in calls, calls
    assert ("nnx", "layers", "_Block", 1) in calls, calls
