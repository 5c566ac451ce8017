"""An example as a person reads it, and as a blob that replays it exactly.

A counterexample shows only what was drawn: the learning rate, the ``init`` seed
the parameters came from, and each batch array as shape, dtype, range and any
non-finite value (small arrays in full); never whole parameter trees. The blob
(``hc1:`` + url-safe base64 of zlib-compressed JSON) holds the case name, the seed,
the lr and the batch, bit for bit; ``hybridcheck verify ... --reproduce BLOB`` runs
that one example.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import jax
import numpy as np

from hybridcheck.describe.subject import Example

__all__ = ["decode", "describe", "encode", "replay"]

PREFIX = "hc1:"
FULL = 12
"""Arrays of at most this many elements are shown in full."""


def _array(x: Any) -> str:
    arr = np.asarray(x)
    head = f"{arr.dtype}{list(arr.shape)}"
    if arr.size == 0:
        return f"{head} (empty)"
    if arr.size <= FULL:
        return f"{head} {np.array2string(arr.ravel(), precision=4, separator=', ')}"
    if not np.issubdtype(arr.dtype, np.number):
        return head
    finite = np.isfinite(arr) if np.issubdtype(arr.dtype, np.inexact) else True
    bad = "" if np.all(finite) else f", {int(np.size(arr) - np.sum(finite))} non-finite"
    shown = arr[finite] if bad else arr
    if shown.size == 0:
        return f"{head} all non-finite"
    return f"{head} in [{shown.min():.4g}, {shown.max():.4g}]{bad}"


def describe(example: Example) -> str:
    """``lr=0.05, params: init seed 3, batch: [0] float32[8, 4] in [-3, 3]; ...``."""
    leaves = jax.tree_util.tree_flatten_with_path(example.batch)[0]
    batch = "; ".join(
        f"{jax.tree_util.keystr(path) or 'batch'} {_array(leaf)}"
        for path, leaf in leaves
    )
    seed = "given" if example.seed is None else f"init seed {example.seed}"
    return f"lr={example.lr:.6g}, params: {seed}, batch: {batch or 'empty'}"


def _pack(tree: Any) -> Any:
    if tree is None or isinstance(tree, bool | int | float | str):
        return tree
    if isinstance(tree, tuple) and not hasattr(tree, "_fields"):
        return {"t": [_pack(x) for x in tree]}
    if isinstance(tree, list):
        return {"l": [_pack(x) for x in tree]}
    if isinstance(tree, dict) and all(isinstance(k, str) for k in tree):
        return {"m": {k: _pack(v) for k, v in tree.items()}}
    if isinstance(tree, np.ndarray | jax.Array | np.generic):
        arr = np.ascontiguousarray(np.asarray(tree))
        return {
            "a": base64.b64encode(arr.tobytes()).decode(),
            "d": arr.dtype.str,
            "s": list(arr.shape),
        }
    raise TypeError(f"a batch leaf of type {type(tree).__name__} cannot be encoded")


def _unpack(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    if "t" in data:
        return tuple(_unpack(x) for x in data["t"])
    if "l" in data:
        return [_unpack(x) for x in data["l"]]
    if "m" in data:
        return {k: _unpack(v) for k, v in data["m"].items()}
    raw = base64.b64decode(data["a"])
    return np.frombuffer(raw, dtype=np.dtype(data["d"])).reshape(data["s"]).copy()


def encode(case: str, example: Example) -> str:
    """The blob of ``example`` of ``case`` ("" when it cannot be replayed: params
    that came from no seed, a batch container other than tuple/list/dict)."""
    if example.seed is None:
        return ""
    try:
        batch = _pack(example.batch)
    except TypeError:
        return ""
    payload = {"case": case, "seed": example.seed, "lr": example.lr, "batch": batch}
    raw = zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 9)
    return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(blob: str) -> dict[str, Any]:
    """``{"case", "seed", "lr", "batch"}`` from a blob.

    Raises:
      ValueError: not a blob hybridcheck wrote.
    """
    if not isinstance(blob, str) or not blob.startswith(PREFIX):
        raise ValueError(
            f"reproduce must be a blob from a hybridcheck report (it starts with "
            f"{PREFIX!r}), got {str(blob)[:40]!r}"
        )
    body = blob[len(PREFIX) :]
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload = json.loads(raw)
        payload["batch"] = _unpack(payload["batch"])
        return {k: payload[k] for k in ("case", "seed", "lr", "batch")}
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise ValueError(
            f"reproduce: the blob is damaged or cut short ({exc}); copy the whole "
            "line from the report"
        ) from exc


def replay(case: Any, payload: dict[str, Any]) -> Example:
    """The example a decoded blob describes, for ``case`` (its ``init`` at the seed)."""
    params = case.init(jax.random.PRNGKey(payload["seed"]))
    return Example(params, payload["batch"], payload["lr"], payload["seed"])
