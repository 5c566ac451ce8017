"""One side's loss with every module call observed: each module's input and output,
and the loss's gradient with respect to each (their cotangents).

Two jitted passes, each with ``compat.intercept_module_calls`` active while it
traces (which also tells which modules run, and their shapes). The forward sends
each module's input and output to the host as it runs (an ordered
``jax.debug.callback``: a module inside ``lax.scan`` reports once per iteration).
The gradient adds a zero "probe" to each module's output and input (its first
floating array argument, fed to that module alone) and differentiates the loss by
the probes. So a module whose output's cotangent agrees between two models while
its input's does not is where their backward passes part. The compiled passes are
kept per shape in ``cache``: localising each failing example of a shrink compiles
once.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat

__all__ = ["Call", "Trace", "trace"]


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: equal if identical
class Call:
    """One module call as observed: where it is, and its values (flattened).

    Attributes:
      framework: ``"linen"`` or ``"nnx"``.
      path: the module's path from the outermost model (``()`` for it).
      type_name: the module's class.
      depth: how many module calls it is nested in.
      shapes: the shapes of its floating outputs.
      input, output: its first floating array argument (``None``: none) and its
        floating outputs, flattened into one float64 vector.
      input_grad, output_grad: the loss's gradient with respect to each (``None``:
        not observed: the module ran more than once, inside a loop or ``vmap``).
      run, runs: which of its runs this is (from 0), of how many.
    """

    framework: str
    path: tuple[str, ...]
    type_name: str
    depth: int
    shapes: tuple[tuple[int, ...], ...]
    input: np.ndarray | None
    output: np.ndarray
    input_grad: np.ndarray | None = None
    output_grad: np.ndarray | None = None
    run: int = 0
    runs: int = 1

    @property
    def name(self) -> str:
        """``'attn/query' (DenseGeneral)``; the outermost model as ``'(top)'``; a
        module that ran more than once (in a scan) with the run, from 1."""
        where = "/".join(self.path) if self.path else "(top)"
        run = f", run {self.run + 1} of {self.runs}" if self.runs > 1 else ""
        return f"'{where}' ({self.type_name}{run})"


@dataclasses.dataclass(frozen=True)
class Trace:
    """One run of a side's loss: its value, its module calls in the order they
    returned (a module after the modules it called), and why no cotangent was
    observed, if so (a module inside a ``jax.custom_vjp`` function: a probe there
    is a tracer the custom rule cannot close over)."""

    loss: float
    calls: tuple[Call, ...]
    note: str = ""


def _floating(x: Any) -> bool:
    return hasattr(x, "dtype") and bool(jnp.issubdtype(x.dtype, jnp.floating))


def _input_slot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Where the module's input is: its first floating array argument, or None."""
    slots = [*enumerate(args), *kwargs.items()]
    return next((k for k, v in slots if isinstance(v, jax.Array | np.ndarray)), None)


class _Pass:
    """The hook of one pass: numbers the module calls as they start; records what
    they are, sends their values to ``sink`` or adds the probes."""

    def __init__(self, probes: dict[str, Any] | None = None, send: bool = False):
        self.probes, self.send = probes, send
        self.calls: list[Any] = []  # compat.ModuleCall, by index
        self.shapes: dict[str, Any] = {}  # the probes' shapes, by key

    def __call__(self, call: Any, call_next: Any, args: Any, kwargs: Any) -> Any:
        index = len(self.calls)
        self.calls.append(call)
        slot = _input_slot(args, kwargs)
        x = None if slot is None else (args if isinstance(slot, int) else kwargs)[slot]
        x = x if _floating(x) else None
        if x is not None and self.probes is not None:
            x = x + self.probes[f"{index}i"]
            if isinstance(slot, int):
                args = (*args[:slot], x, *args[slot + 1 :])
            else:
                kwargs = {**kwargs, slot: x}
        out = call_next(*args, **kwargs)
        leaves, treedef = jax.tree_util.tree_flatten(out)
        floats = [i for i, leaf in enumerate(leaves) if _floating(leaf)]
        if x is not None:
            self.shapes[f"{index}i"] = jax.ShapeDtypeStruct(x.shape, x.dtype)
        self.shapes[f"{index}o"] = [
            jax.ShapeDtypeStruct(leaves[i].shape, leaves[i].dtype) for i in floats
        ]
        if self.probes is not None:
            for i, probe in zip(floats, self.probes[f"{index}o"], strict=True):
                leaves[i] = leaves[i] + probe
            return jax.tree_util.tree_unflatten(treedef, leaves)
        if self.send and floats:
            sent = [leaves[i] for i in floats] + ([] if x is None else [x])
            send = functools.partial(_receive, index, x is not None)
            jax.debug.callback(send, *sent, ordered=True)
        return out


_SINK: list[tuple[int, np.ndarray | None, np.ndarray]] = []


def _receive(index: int, has_input: bool, *values: Any) -> None:
    """Host side of the forward pass: one module call's flattened values."""
    flat = [np.asarray(v, np.float64).ravel() for v in values]
    outs = flat[:-1] if has_input else flat
    _SINK.append((index, flat[-1] if has_input else None, np.concatenate(outs)))


@dataclasses.dataclass
class _Compiled:
    """One side's two passes at one shape; the forward's hook knows, once it has
    traced, which modules run and the probes' shapes."""

    hook: _Pass
    forward: Callable[..., Any]
    backward: Callable[..., Any]


def _compile(loss: Callable[[Any, Any], Any]) -> _Compiled:
    forward, backward = _Pass(send=True), _Pass(probes={})

    def run_forward(p: Any, b: Any) -> Any:
        forward.calls = []
        return loss(p, b)

    def run_backward(probes: Any, p: Any, b: Any) -> Any:
        backward.probes, backward.calls = probes, []
        return loss(p, b)

    return _Compiled(
        forward,
        _traced(forward, jax.jit(run_forward)),
        _traced(backward, jax.jit(jax.grad(run_backward))),
    )


def _traced(hook: _Pass, jitted: Callable[..., Any]) -> Callable[..., Any]:
    """``jitted`` with the hook in place (JAX traces again on a new shape)."""

    def call(*args: Any) -> Any:
        with compat.intercept_module_calls(hook):
            out = jax.block_until_ready(jitted(*args))
        jax.effects_barrier()
        return out

    return call


_LOCK = threading.Lock()


def trace(
    loss: Callable[[Any, Any], Any],
    params: Any,
    batch: Any,
    cache: dict[Any, Any] | None = None,
) -> Trace:
    """``loss(params, batch)`` with every module call observed (call under
    ``compat.enable_x64()`` for float64 params); ``cache`` keeps the compiled
    passes by ``loss`` and shapes."""
    batch = jax.tree.map(jnp.asarray, batch)
    key = (id(loss), str(jax.tree.map(lambda x: (x.shape, x.dtype), (params, batch))))
    cache = {} if cache is None else cache
    if key not in cache:
        cache[key] = _compile(loss)
    c: _Compiled = cache[key]
    with _LOCK:  # the sink is shared
        _SINK.clear()
        value = float(c.forward(params, batch))
        sent = list(_SINK)
        _SINK.clear()
    runs = collections.Counter(index for index, _, _ in sent)
    shapes, meta = c.hook.shapes, c.hook.calls
    probes = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    try:
        grads, note = c.backward(probes, params, batch), ""
    except Exception as exc:  # noqa: BLE001 - the forward comparison still stands
        grads = {}
        first = (str(exc).splitlines() or [""])[0]
        note = f"the gradient pass raised {type(exc).__name__}: {first}"
    calls, seen = [], {i: 0 for i in runs}
    for index, x, out in sent:
        call, seen[index] = meta[index], seen[index] + 1
        g_in = grads.get(f"{index}i") if runs[index] == 1 else None
        g_out = grads.get(f"{index}o") if runs[index] == 1 else None
        calls.append(
            Call(
                call.framework,
                call.path,
                call.type_name,
                call.depth,
                tuple(tuple(s.shape) for s in shapes[f"{index}o"]),
                x,
                out,
                None if g_in is None else np.asarray(g_in, np.float64).ravel(),
                None
                if g_out is None
                else np.concatenate([np.asarray(g, np.float64).ravel() for g in g_out]),
                seen[index] - 1,
                runs[index],
            )
        )
    return Trace(value, tuple(calls), note)
