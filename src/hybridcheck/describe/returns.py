"""What the user's functions must give back, checked where it comes back: a loss is
one floating scalar, a step returns the params' own tree, a batch is a tree of
finite arrays. A violation is named as itself, blamed on the function that returned
it (:class:`BadReturn`), once for every invariant it blocks.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck.describe.usercode import UserCodeError, call, defined_at

__all__ = [
    "EXTREME",
    "BadReturn",
    "check_batch",
    "check_init",
    "check_step_output",
    "checked_loss",
    "preflight",
]

EXTREME = 1e18
"""A batch value beyond this overflows float32 when squared (max 3.4e38): a batches
strategy that draws it tests float32 overflow, not the step."""


class BadReturn(UserCodeError):
    """The user's ``where`` returned (or drew) something it must not."""

    def __init__(self, case: str, where: str, problem: str) -> None:
        Exception.__init__(
            self,
            f"[{case}] the user's {where} {problem} (your code, not hybridcheck's)",
        )
        self.case, self.where, self.error = case, where, TypeError(problem)


def _kind(value: Any) -> str:
    """What ``value`` is, in words that do not depend on the precision it ran in."""
    if value is None:
        return "None"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if jnp.issubdtype(value.dtype, jnp.floating):
            return f"a float array of shape {tuple(value.shape)}"
        return f"a {value.dtype}{list(value.shape)} array"
    return f"a {type(value).__name__}"


def checked_loss(case: str, loss: Callable[..., Any]) -> Callable[..., Any]:
    """``loss`` (named as the user's) that must return one floating scalar."""

    def checked(params: Any, batch: Any) -> Any:
        out = call(case, "loss", loss, params, batch)
        try:
            value = None if out is None else jnp.asarray(out)
        except (TypeError, ValueError):
            value = None
        if (
            value is None
            or value.shape != ()
            or not jnp.issubdtype(value.dtype, jnp.floating)
        ):
            fix = (
                "reduce it to one number (jnp.mean)"
                if value is not None and value.shape != ()
                else "return one float, e.g. jnp.mean((pred - y) ** 2)"
            )
            site = defined_at(loss)
            raise BadReturn(
                case,
                "loss" + (f" ({site})" if site else ""),
                f"returned {_kind(out)}; a loss returns one floating scalar: {fix}",
            )
        return out

    return checked


def _children(tree: Any) -> dict[str, Any] | None:
    if isinstance(tree, dict):
        return {str(k): v for k, v in tree.items()}
    if hasattr(tree, "_asdict"):
        return dict(tree._asdict())
    if isinstance(tree, tuple | list):
        return {str(i): v for i, v in enumerate(tree)}
    return None


def check_step_output(case: str, params: Any, new: Any) -> Any:
    """``new`` if it has the params' tree; else the step is named for it, with the
    half whose tree changed."""
    want, got = jax.tree.structure(params), jax.tree.structure(new)
    if str(want) == str(got):
        return new
    old_halves, new_halves = _children(params), _children(new)
    where = ""
    if old_halves and new_halves and old_halves.keys() == new_halves.keys():
        changed = [
            f"half {k!r}: {str(jax.tree.structure(new_halves[k]))[:200]} where the "
            f"params have {str(jax.tree.structure(v))[:200]}"
            for k, v in old_halves.items()
            if str(jax.tree.structure(v)) != str(jax.tree.structure(new_halves[k]))
        ]
        where = "; ".join(changed)
    detail = where or f"{str(got)[:300]} where the params have {str(want)[:300]}"
    raise BadReturn(
        case,
        "step",
        f"returned new params with another tree structure ({detail}): return the "
        "params container with every half and leaf, same nesting and keys (a half "
        "dropped, returned twice or wrapped twice breaks the next step)",
    )


def check_batch(case: str, batch: Any) -> Any:
    """``batch`` if it is a tree of arrays with finite, bounded floating values."""
    leaves = jax.tree_util.tree_flatten_with_path(batch)[0]
    if not leaves:
        raise BadReturn(case, "batches", f"drew {_kind(batch)}, a batch with no array")
    for path, leaf in leaves:
        where = jax.tree_util.keystr(path) or "the batch"
        try:
            arr = np.asarray(leaf)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.dtype.kind not in "biufc":
            raise BadReturn(
                case,
                "batches",
                f"drew {_kind(leaf)} at {where}: batch leaves are arrays of numbers",
            )
        if arr.size == 0:
            raise BadReturn(
                case,
                "batches",
                f"drew an empty array (shape {arr.shape}) at {where}: a batch needs "
                "at least one example (min_size / min_side >= 1)",
            )
        if np.issubdtype(arr.dtype, np.inexact):
            if not np.all(np.isfinite(arr)):
                raise BadReturn(
                    case,
                    "batches",
                    f"drew a non-finite value (inf or nan) at {where}: bound the "
                    "strategy (allow_nan=False, allow_infinity=False, min/max_value)",
                )
            if arr.size and np.max(np.abs(arr)) > EXTREME:
                raise BadReturn(
                    case,
                    "batches",
                    f"drew {np.max(np.abs(arr)):.3g} at {where}, beyond {EXTREME:g} "
                    "(its square overflows float32): bound the strategy "
                    "(min_value/max_value)",
                )
    return batch


@jax.jit
def _finite_leaves(leaves: list[Any]) -> list[Any]:
    """Per leaf, whether every entry is finite (integer leaves always are): one
    compiled call per structure, reduced on the device."""
    return [jnp.all(jnp.isfinite(x)) for x in leaves]


_finite_seen: list[tuple[Any, ...]] = []
"""Weak references to the leaves of the last few params found finite: examples
share the params of a few seeds, so each is checked once."""


def _seen_finite(flat: list[Any]) -> tuple[bool, tuple[Any, ...] | None]:
    # Only JAX arrays, which cannot change in place (a NumPy leaf can).
    if not all(isinstance(x, jax.Array) for _, x in flat):
        return False, None
    refs = tuple(weakref.ref(x) for _, x in flat)
    for seen in _finite_seen:
        if len(seen) == len(flat) and all(
            r() is x for r, (_, x) in zip(seen, flat, strict=True)
        ):
            return True, refs
    return False, refs


def _nonfinite_leaf(params: Any) -> str | None:
    """The path of the first leaf of ``params`` holding NaN/Inf, if any."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    seen, refs = _seen_finite(flat)
    if seen:
        return None
    arrays = [np.asarray(x) if not isinstance(x, jax.Array) else x for _, x in flat]
    if all(np.issubdtype(np.dtype(x.dtype), np.number) for x in arrays):
        finite = jax.device_get(_finite_leaves(arrays))
    else:  # a leaf jit cannot take (an object array): the host checks it
        finite = [
            not np.issubdtype(np.asarray(x).dtype, np.inexact)
            or bool(np.all(np.isfinite(np.asarray(x))))
            for x in arrays
        ]
    for (path, _), ok in zip(flat, finite, strict=True):
        if not ok:
            return jax.tree_util.keystr(path)
    if refs is not None:
        _finite_seen.append(refs)
        del _finite_seen[:-8]
    return None


def preflight(subject: Any, params: Any, batch: Any) -> None:
    """The case's own functions on one example, before any invariant: params from
    its init must be finite, its loss must give one finite number on them. A
    violation is the case's own (one cause for every invariant it would block)."""
    case = getattr(subject, "name", "case")
    where = _nonfinite_leaf(params)
    if where is not None:
        raise BadReturn(case, "init", f"returned params with NaN/Inf at {where}")
    value = float(np.asarray(subject.loss_fn(params, batch)))
    if not np.isfinite(value):
        raise BadReturn(
            case,
            "loss",
            f"returned {value} on finite params and a finite batch: a log or a "
            "division of 0, an overflow (a loss must be finite where training starts)",
        )


def check_init(case: str, subject: Any, params: Any) -> None:
    """Every trainable half of the params ``init`` returned has a floating leaf."""
    for half, tree in subject.trainable(params).items():
        kinds = {str(np.asarray(x).dtype) for x in jax.tree.leaves(tree)}
        if not any(np.issubdtype(np.dtype(k), np.inexact) for k in kinds):
            raise BadReturn(
                case,
                "init",
                f"returned trainable half {half!r} with no floating leaf (dtypes "
                f"{sorted(kinds) or 'none'}): parameters to train must be floating; "
                "integer leaves belong to a non-trainable half (non_trainable=...)",
            )
