"""Which precision a float64 replay actually ran in, and its rounding noise.

The float64 replays (finite differences, first order, the ill-conditioning probes)
cast the params and the batch to float64, but a layer built with an explicit
``dtype=jnp.float32`` (as Flax's examples write them), a bf16 compute dtype or an
``nnx.Embed`` that rounds its table to its build dtype casts them back: that part of
the "float64" replay runs in float32 or bfloat16, and judging it by float64
tolerances blames a correct model. So we read what ran: the jaxpr of the replayed
function, traced with float64 inputs, and the dtypes of the floating values on its
path from the floating inputs to the outputs (forward from the inputs, backward from
the outputs, into jit, custom_vjp, remat, scan and cond bodies). The least precise
of them (``lax.reduce_precision`` counts by its mantissa bits) is the precision the
replay judged in; :func:`rounding_noise` measures that precision's noise on the
example itself.

Values computed only from integer or boolean inputs (a mask cast to float32, one-hot
labels) carry no rounding of the inputs and do not count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck.describe._typing import PyTree

__all__ = [
    "FLOAT64",
    "PRECISION_ULPS",
    "Precision",
    "abstract64",
    "replay_precision",
    "rounding_noise",
    "precision_note",
]


PRECISION_ULPS = 8.0
"""Comparisons of two float64 replays (the step vs ``tx``, sharded vs one device)
that ran in less than float64 allow at least this many rounding steps of the
precision that ran, relative (float32's are within their own tolerances already)."""


@dataclasses.dataclass(frozen=True)
class Precision:
    """The least precise floating values a replay computed on its path.

    Attributes:
      name: ``"float64"``, ``"float32"``, ``"bfloat16"``, ``"float16"`` or
        ``"reduce_precision(mantissa=m)"``.
      eps: its machine epsilon (the gap above 1.0): the unit of its noise.
      ops: up to three primitives that produced values of that precision.
    """

    name: str
    eps: float
    ops: tuple[str, ...] = ()

    @property
    def full(self) -> bool:
        """Whether the replay ran in float64 throughout."""
        return self.eps <= FLOAT64.eps

    def describe(self) -> str:
        """``float64``, or what ran in less (for messages and notes)."""
        if self.full:
            return "float64"
        return (
            f"{self.name}: {', '.join(self.ops)} computed {self.name} values from "
            "the float64 inputs (a layer's explicit dtype= / param_dtype=, or a "
            "low-precision compute dtype)"
        )


FLOAT64 = Precision("float64", float(np.finfo(np.float64).eps))


def _eps(dtype: Any) -> float:
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.complexfloating):
        dt = np.finfo(dt).dtype
    return float(jnp.finfo(dt).eps)


def _is_float(aval: Any) -> bool:
    dtype = getattr(aval, "dtype", None)
    return dtype is not None and bool(jnp.issubdtype(dtype, jnp.inexact))


def _subjaxprs(params: dict[str, Any]) -> Iterator[Any]:
    """The jaxprs an equation calls (jit, custom_vjp, remat, scan, cond bodies)."""
    for value in params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            inner = getattr(item, "jaxpr", item)  # ClosedJaxpr -> Jaxpr
            if hasattr(inner, "eqns") and hasattr(inner, "invars"):
                yield inner


def _is_var(x: Any) -> bool:
    return not hasattr(x, "val")  # a Literal has .val


def _walk(
    jaxpr: Any, tainted_in: Sequence[bool], found: dict[float, Any]
) -> list[bool]:
    """Records ``found[eps] = (name, ops)`` for values on the inputs-to-outputs
    path; returns which outputs carry float input information."""
    tainted = {v for v, t in zip(jaxpr.invars, tainted_in, strict=True) if t}
    candidates: list[tuple[Any, list[Any]]] = []
    for eqn in jaxpr.eqns:
        hot = [_is_var(x) and x in tainted for x in eqn.invars]
        if not any(hot):
            continue
        for inner in _subjaxprs(eqn.params):
            n = len(inner.invars)
            sub_in = hot if n == len(hot) else [True] * n
            _walk(inner, sub_in, found)
        outs = [v for v in eqn.outvars if _is_float(v.aval)]
        tainted.update(outs)
        candidates.append((eqn, outs))
    live = {v for v in jaxpr.outvars if _is_var(v)}
    for eqn, outs in reversed(candidates):  # backward: only what reaches the outputs
        if not any(v in live for v in eqn.outvars):
            continue
        live.update(x for x in eqn.invars if _is_var(x))
        name = eqn.primitive.name
        if any(True for _ in _subjaxprs(eqn.params)):
            continue  # a call: its body's values were recorded inside it
        for v in outs:
            if name == "reduce_precision":
                bits = int(eqn.params.get("mantissa_bits", 52))
                key, label = 2.0**-bits, f"reduce_precision(mantissa={bits})"
            else:
                key, label = _eps(v.aval.dtype), str(np.dtype(v.aval.dtype))
            entry = found.setdefault(key, (label, []))
            if name not in entry[1]:
                entry[1].append(name)
    return [_is_var(v) and v in tainted for v in jaxpr.outvars]


def _float_key(tree: PyTree) -> Any:
    return tuple(
        (tuple(np.shape(x)), str(jnp.result_type(x))) for x in jax.tree.leaves(tree)
    )


_CONTRACTIONS = ("conv_general_dilated", "dot_general", "convert_element_type")
"""Named first in messages: where a layer's compute dtype shows."""

_CACHE: dict[tuple[Any, ...], tuple[Any, Precision]] = {}


def replay_precision(fn: Callable[..., Any], *args: Any) -> Precision:
    """The least precise floating values ``fn(*args)`` computes on its path.

    Call under ``compat.enable_x64()`` with the float64 arguments of the replay.
    Traced once per function and shapes (``jax.make_jaxpr``, nothing compiled or
    run). A function that cannot be traced abstractly counts as float64 (the
    replay's own verdict then stands as before).
    """
    key = (id(fn), jax.tree.structure(args), _float_key(args))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is fn:
        return hit[1]
    try:
        closed = jax.make_jaxpr(fn)(*args)
    except Exception:  # noqa: BLE001 - the replay itself will raise, if it must
        return FLOAT64
    found: dict[float, Any] = {}
    _walk(
        closed.jaxpr,
        [_is_float(v.aval) for v in closed.jaxpr.invars],
        found,
    )
    worst = max(found, default=0.0)
    if worst <= FLOAT64.eps:
        result = FLOAT64
    else:
        name, ops = found[worst]
        ops = sorted(ops, key=lambda op: (op not in _CONTRACTIONS, op))
        result = Precision(name, worst, tuple(ops[:3]))
    if len(_CACHE) > 64:  # a few functions and shape buckets per case
        _CACHE.clear()
    _CACHE[key] = (fn, result)
    return result


def abstract64(tree: PyTree) -> PyTree:
    """``to64(tree)`` as shapes and dtypes only (``jax.ShapeDtypeStruct``): what
    :func:`replay_precision` needs, without copying the params."""

    def spec(x: Any) -> Any:
        dtype = jnp.result_type(x)
        if jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.dtype("float64")
        return jax.ShapeDtypeStruct(np.shape(x), dtype)

    return jax.tree.map(spec, tree)


def _relative_signs(tree: PyTree, rel: float, stream: int) -> PyTree:
    """Every floating leaf times ``1 + rel * s`` for a fixed +-1 pattern ``s``."""
    rng = np.random.default_rng(stream)
    return jax.tree.map(
        lambda x: (
            x
            * (
                1.0
                + rel
                * jnp.asarray(rng.choice([-1.0, 1.0], np.shape(x)), jnp.result_type(x))
            )
            if jnp.issubdtype(jnp.result_type(x), jnp.floating)
            else x
        ),
        tree,
    )


def rounding_noise(
    f: Callable[[PyTree], Any], tree: PyTree, precision: Precision, *, samples: int = 4
) -> float:
    """How much rounding alone moves ``f`` at ``tree``, in the precision that ran.

    ``max |f(tree * (1 + eps * s_k)) - f(tree)|`` over ``samples`` fixed +-1 patterns
    ``s_k``, ``eps`` the precision's epsilon: every input moved by one rounding step
    of that precision (what casting a perturbed float64 input to it does), and the
    evaluation's own rounding decorrelated with it. The noise a difference of two
    evaluations of ``f`` carries, measured on the example rather than modelled; at
    least ``eps * |f(tree)|``, one rounding step of the value itself (a loss that
    one-ulp input changes do not move still changes in steps of its own ulp).
    """
    base = float(f(tree))
    return max(
        [precision.eps * abs(base)]
        + [
            abs(float(f(_relative_signs(tree, precision.eps, k))) - base)
            for k in range(samples)
        ]
    )


def precision_note(
    evidence: Sequence[Precision], *, floor: float = FLOAT64.eps
) -> str | None:
    """The report's note for an invariant judged somewhere in a precision whose
    epsilon exceeds ``floor`` (float64's: anything less than float64)."""
    low = [p for p in evidence if p.eps > floor]
    if not low:
        return None
    worst = max(low, key=lambda p: p.eps)
    return (
        f"judged in {worst.name} on {len(low)} of {len(evidence)} examples, in units "
        f"of its rounding noise ({worst.describe()})"
    )
