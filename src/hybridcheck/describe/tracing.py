"""Counting traces and compilations, for retrace budgets.

Two complementary tools:

* :class:`TraceCounter` wraps a Python function *before* it is jitted and counts how
  often JAX runs it (each run is one trace), like ``chex.assert_max_traces``, but
  inspectable instead of raising, so the verifier can report the count.
* :func:`count_compiles` counts XLA compilations of already-jitted functions by name,
  from JAX's own ``log_compiles`` records (works for module-level ``jax.jit``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import jax

__all__ = ["TraceCounter", "CompileCount", "count_compiles"]


class TraceCounter:
    """Wraps ``fn``; ``count`` is how many times it was traced (or run eagerly).

    Example:
      >>> counted = TraceCounter(lambda x: x * 2)
      >>> f = jax.jit(counted)
      >>> _ = f(1.0); _ = f(2.0)
      >>> counted.count
      1
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.count = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self.fn(*args, **kwargs)


class CompileCount:
    """Result of :func:`count_compiles`: compilations seen, per function name."""

    def __init__(self) -> None:
        self.by_name: dict[str, int] = {}

    def __getitem__(self, name: str) -> int:
        return self.by_name.get(name, 0)

    @property
    def total(self) -> int:
        return sum(self.by_name.values())


_COMPILING = re.compile(r"^Compiling (?:jit\()?([<A-Za-z_][\w.<>]*)")


class _Handler(logging.Handler):
    def __init__(self, result: CompileCount) -> None:
        super().__init__(level=logging.DEBUG)
        self.result = result

    def emit(self, record: logging.LogRecord) -> None:
        match = _COMPILING.match(record.getMessage())
        if match:
            name = match.group(1)
            self.result.by_name[name] = self.result.by_name.get(name, 0) + 1


@contextlib.contextmanager
def count_compiles() -> Iterator[CompileCount]:
    """Counts XLA compilations inside the block, keyed by the jitted function's name.

    Example:
      >>> with count_compiles() as compiled:
      ...     _ = jax.jit(lambda x: x + 1)(1.0)
      >>> compiled.total >= 1
      True
    """
    result = CompileCount()
    handler = _Handler(result)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield result
    finally:
        logger.removeHandler(handler)
