"""The converter itself: it covers every param (element by element), and ``invert``
undoes it bitwise.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat
from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.migration_case import MigrationSubject
from hybridcheck.describe.subject import Example, to64
from hybridcheck.describe.trees import (
    InvariantNotApplicable,
    fail,
    leaves,
)
from hybridcheck.invariants.registry import Invariant, register

__all__ = [
    "assert_convert_covers_every_param",
    "assert_roundtrip",
]


def assert_convert_covers_every_param(
    before_reach: PyTree, after_source: PyTree
) -> None:
    """Every before element reaches the after params; every after element has a source.

    Args:
      before_reach: the before params' structure with boolean leaves: which elements
        influence some after element.
      after_source: the after params' structure with boolean leaves: which elements
        are influenced by some before element.
    """
    problems = []
    for side, tree, verb in (
        ("before", before_reach, "reach no after param"),
        ("after", after_source, "come from no before param"),
    ):
        for path, leaf in leaves(tree):
            mask = np.asarray(leaf, bool)
            missing = int(mask.size - np.count_nonzero(mask))
            if missing:
                problems.append(
                    f"{side} leaf {path}: {missing} of {mask.size} elements {verb}"
                )
    fail(
        "convert_covers_every_param",
        problems,
        "The checkpoint converter drops a parameter (a bias discarded, a slice of a "
        "fused kernel lost) or the after model has parameters the converter never "
        "fills (left at their fresh initialisation).",
    )


def assert_roundtrip(params: PyTree, back: PyTree) -> None:
    """``invert(convert(params)) == params``, bitwise, leaf by leaf."""
    problems = []
    got = dict(leaves(back))
    for path, leaf in leaves(params):
        if path not in got:
            problems.append(f"leaf {path}: missing after the round trip")
            continue
        a, b = np.asarray(leaf), np.asarray(got[path])
        if a.shape != b.shape or a.dtype != b.dtype:
            problems.append(
                f"leaf {path}: {a.dtype}{list(a.shape)} came back as "
                f"{b.dtype}{list(b.shape)}"
            )
        elif not np.array_equal(a, b):
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
            problems.append(f"leaf {path}: values changed (max |diff| {diff:.3g})")
    extra = set(got) - {p for p, _ in leaves(params)}
    if extra:
        problems.append(f"leaves {sorted(extra)} appeared in the round trip")
    fail(
        "roundtrip",
        problems,
        "invert(convert(p)) must give p back exactly: the converters disagree on a "
        "layout (a transpose or a head split applied one way only) or lose precision.",
    )


def _random_like(rng: np.random.Generator, x: Any) -> Any:
    """A random array like ``x`` with no zero entry in any float dtype (magnitudes
    in [0.5, 1.5), random signs), drawn on the host: no compilation per leaf shape.
    ``float0`` zeros for integer leaves (JAX's tangent and cotangent type for them).
    """
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        shape = np.shape(x)
        values = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        return np.asarray(values, dtype=jnp.result_type(x))
    return np.zeros(np.shape(x), jax.dtypes.float0)


def _nonzero(x: Any) -> Any:
    """Which elements were reached; integer leaves (float0) are not traced."""
    arr = np.asarray(x)
    if arr.dtype == jax.dtypes.float0:
        return np.ones(arr.shape, bool)
    return arr != 0


def check_convert_covers_every_param(ms: MigrationSubject, e: Example) -> None:
    with compat.enable_x64():
        p64 = to64(e.params)
        rng = np.random.default_rng(0)  # the same draws on every run and release
        try:
            out, pullback = jax.vjp(ms.convert, p64)
            (back,) = pullback(jax.tree.map(lambda x: _random_like(rng, x), out))
            tangent = jax.tree.map(lambda x: _random_like(rng, x), p64)
            _, forward = jax.jvp(ms.convert, (p64,), (tangent,))
        except Exception as exc:  # noqa: BLE001 - a host-side converter
            raise InvariantNotApplicable(
                f"convert is not differentiable by JAX ({type(exc).__name__}), so "
                "element coverage cannot be traced"
            ) from exc
        reach = jax.tree.map(_nonzero, back)
        source = jax.tree.map(_nonzero, forward)
    assert_convert_covers_every_param(reach, source)


def check_roundtrip(ms: MigrationSubject, e: Example) -> None:
    if ms.invert is None:
        raise InvariantNotApplicable("the case has no invert")
    assert_roundtrip(e.params, ms.invert(ms.convert(e.params)))


# This family's rows of the registry (report order).
register(
    Invariant(
        "convert_covers_every_param",
        "(migration) a before param the converter drops (a bias discarded, a slice "
        "lost) or an after param it never fills; element by element, through "
        "`jax.vjp`/`jax.jvp` of `convert`",
        check_convert_covers_every_param,
        kind="migration",
        cost=("convert", "float64"),
    ),
    Invariant(
        "roundtrip",
        "(migration) `invert(convert(p)) != p` bitwise, where the case gives `invert`",
        check_roundtrip,
        needs_field="invert",
        kind="migration",
        cost=("convert",),
    ),
)
