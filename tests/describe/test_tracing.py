"""TraceCounter counts traces, not calls; count_compiles reads JAX's compile log."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from hybridcheck.describe.tracing import TraceCounter, count_compiles


def test_trace_counter_counts_one_trace_per_shape():
    counted = TraceCounter(lambda x: x * 2)
    f = jax.jit(counted)
    f(jnp.float32(1.0))
    f(jnp.float32(2.0))  # same shape and dtype: no new trace
    assert counted.count == 1
    f(jnp.ones(3))
    assert counted.count == 2


def test_trace_counter_counts_python_constants_as_retraces():
    counted = TraceCounter(lambda x, k: x * k)
    f = jax.jit(counted, static_argnums=1)
    for k in (1, 2, 3):
        f(jnp.float32(1.0), k)
    assert counted.count == 3


def test_trace_counter_rejects_non_callables():
    with pytest.raises(TypeError, match="fn must be callable, got int"):
        TraceCounter(3)  # type: ignore[arg-type]


def test_count_compiles_names_the_function():
    def doubled_for_counting(x):
        return x * 2

    f = jax.jit(doubled_for_counting)
    with count_compiles() as compiled:
        f(jnp.ones(2))
        f(jnp.ones(2))
        f(jnp.ones(5))
    assert compiled["doubled_for_counting"] == 2, compiled.by_name
    assert compiled.total >= 2
    assert compiled["never_compiled"] == 0
