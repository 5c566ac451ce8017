"""Every Linen and NNX module call of a function, with its module path, in call order.

Linen has an API for it (``nn.intercept_methods``); NNX has none, so for the length
of :func:`intercept_module_calls` the ``__call__`` of every ``nnx.Module`` subclass
that defines one is wrapped (and restored after). A call sees the calls it is
nested in, which gives NNX modules their paths (the attribute path of the child in
its caller's graph) and a Linen module run by a ``bridge.ToNNX`` (or an NNX module
run by a ``bridge.ToLinen``) the path of the wrapper around it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import flax
from flax import linen as nn

from hybridcheck.compat._variables import iter_submodules
from hybridcheck.compat._versions import nnx

__all__ = ["ModuleCall", "intercept_module_calls", "module_call_support"]


@dataclasses.dataclass(frozen=True)
class ModuleCall:
    """One module call: which framework, the module's path, its class, how deep.

    ``path`` is the module's path from the outermost model (Linen's
    ``module.path``; for NNX the attribute path in the graph of the module whose
    call it is nested in, or of a module the calling function holds in a local
    variable); ``depth`` counts the module calls it is nested in.
    """

    framework: str
    path: tuple[str, ...]
    type_name: str
    depth: int
    module: Any = dataclasses.field(compare=False, repr=False)


Hook = Callable[[ModuleCall, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
"""``hook(call, call_next, args, kwargs) -> output``: runs ``call_next(*args,
**kwargs)`` (with the arguments it chooses) and returns the module's output."""


def module_call_support() -> str | None:
    """``None`` where module calls can be intercepted, else why not.

    As of Flax 0.8.4 (the floor) ``nn.intercept_methods`` and ``flax.nnx`` exist;
    this is the one place that would say otherwise.
    """
    if not hasattr(nn, "intercept_methods"):  # pragma: no cover - below the floor
        return f"flax {flax.__version__} has no nn.intercept_methods"
    return None


class _State(threading.local):
    def __init__(self) -> None:
        self.hook: Hook | None = None
        self.stack: list[ModuleCall] = []
        self.graphs: dict[int, tuple[Any, dict[Any, tuple[str, ...]]]] = {}


_LOCAL = _State()
_LOCK = threading.Lock()
_PATCHED: dict[type, Any] = {}
_USERS = [0]


def _key(entry: Any) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def _graph(module: Any) -> dict[Any, tuple[str, ...]]:
    """``{id(submodule): path}`` in ``module``'s graph, and ``{class: path}`` for
    the classes that occur once (memoized per interception; the module is kept
    alive meanwhile, so its id is not reused)."""
    memo = _LOCAL.graphs.get(id(module))
    if memo is None:
        found: dict[Any, tuple[str, ...]] = {}
        classes: dict[type, list[tuple[str, ...]]] = {}
        with contextlib.suppress(Exception):  # a graph NNX cannot walk: no paths
            for path, sub in iter_submodules(module):
                keys = tuple(_key(k) for k in path)
                found.setdefault(id(sub), keys)
                classes.setdefault(type(sub), []).append(keys)
        found.update({c: paths[0] for c, paths in classes.items() if len(paths) == 1})
        memo = _LOCAL.graphs[id(module)] = (module, found)
    return memo[1]


def _nnx_path(module: Any, frame: Any) -> tuple[str, ...]:
    """The path of an NNX module called inside another module's call (in its
    graph: the same object, or else the one module of its class, as for the copy
    ``nnx.scan`` or ``nnx.vmap`` calls), or from a function that holds its root
    in a local variable."""
    parent = _LOCAL.stack[-1] if _LOCAL.stack else None
    if parent is not None and parent.framework == "nnx":
        graph = _graph(parent.module)
        inside = graph.get(id(module), graph.get(type(module)))
        if inside is not None:
            return parent.path + inside
    prefix = parent.path if parent is not None else ()
    for _ in range(3):  # the caller, and two frames out (a forward helper)
        if frame is None:
            break
        for value in list(frame.f_locals.values()):
            if value is module:
                return prefix
            if isinstance(value, nnx.Module):
                inside = _graph(value).get(id(module))
                if inside is not None:
                    return prefix + inside
        frame = frame.f_back
    return prefix


def _linen_path(module: Any) -> tuple[str, ...]:
    """A bound Linen module's path, under the NNX module (``bridge.ToNNX``) whose
    call it runs in. As of Flax 0.7 ``Module.path`` exists; ``scope.path`` before."""
    own = getattr(module, "path", None)
    if own is None:  # pragma: no cover - below the floor
        own = module.scope.path
    outer = next((c for c in reversed(_LOCAL.stack) if c.framework == "nnx"), None)
    return (outer.path if outer else ()) + tuple(str(p) for p in own)


def _run(call: ModuleCall, call_next: Any, args: Any, kwargs: Any) -> Any:
    hook = _LOCAL.hook
    assert hook is not None
    _LOCAL.stack.append(call)
    try:
        return hook(call, call_next, args, kwargs)
    finally:
        _LOCAL.stack.pop()


def _linen_interceptor(call_next: Any, args: Any, kwargs: Any, context: Any) -> Any:
    if _LOCAL.hook is None or context.method_name != "__call__":
        return call_next(*args, **kwargs)
    module = context.module
    call = ModuleCall(
        "linen", _linen_path(module), type(module).__name__, len(_LOCAL.stack), module
    )
    return _run(call, call_next, args, kwargs)


def _wrap(original: Any) -> Any:
    @functools.wraps(original)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
        top = _LOCAL.stack[-1].module if _LOCAL.stack else None
        if _LOCAL.hook is None or top is self:  # not ours, or super().__call__
            return original(self, *args, **kwargs)
        path = _nnx_path(self, sys._getframe(1))
        call = ModuleCall("nnx", path, type(self).__name__, len(_LOCAL.stack), self)
        return _run(call, functools.partial(original, self), args, kwargs)

    return __call__


def _nnx_classes() -> list[type]:
    seen: list[type] = []
    todo = [nnx.Module]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return [c for c in seen if "__call__" in vars(c)]


@contextlib.contextmanager
def _nnx_patched() -> Iterator[None]:
    """Every nnx Module class's own ``__call__`` wrapped while any thread intercepts
    (the wrapper does nothing for a thread that does not)."""
    with _LOCK:
        _USERS[0] += 1
        if _USERS[0] == 1:
            for cls in _nnx_classes():
                _PATCHED[cls] = vars(cls)["__call__"]
                type.__setattr__(cls, "__call__", _wrap(_PATCHED[cls]))
    try:
        yield
    finally:
        with _LOCK:
            _USERS[0] -= 1
            if _USERS[0] == 0:
                for cls, original in _PATCHED.items():
                    type.__setattr__(cls, "__call__", original)
                _PATCHED.clear()


@contextlib.contextmanager
def intercept_module_calls(hook: Hook) -> Iterator[None]:
    """Routes every Linen and NNX module ``__call__`` in this thread through ``hook``.

    As of Flax 0.8.4 (measured 0.8.5 and 0.12.8) ``nn.intercept_methods`` sees
    every Linen method call of a bound module; NNX has no such API, so the
    ``__call__`` of each ``nnx.Module`` subclass that defines one is wrapped for the
    duration (classes created inside the block are not). NNX module paths come from
    ``nnx.iter_modules`` of the calling module (``Module.iter_modules`` before 0.12).

    Args:
      hook: ``hook(call, call_next, args, kwargs)``, a :data:`Hook`.

    Raises:
      RuntimeError: if this thread is already intercepting (no nesting).
    """
    why = module_call_support()
    if why is not None:  # pragma: no cover - below the floor
        raise NotImplementedError(why)
    if _LOCAL.hook is not None:
        raise RuntimeError("intercept_module_calls is already active in this thread")
    _LOCAL.hook, _LOCAL.stack, _LOCAL.graphs = hook, [], {}
    try:
        with _nnx_patched(), nn.intercept_methods(_linen_interceptor):
            yield
    finally:
        _LOCAL.hook, _LOCAL.stack, _LOCAL.graphs = None, [], {}
