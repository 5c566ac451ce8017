"""The leaves of one side of a migration, in the case layout: their kind, their
names normalised, and the units the matcher pairs (a scan-stacked leaf is one unit
per layer).

A leaf's **kind** decides what it may be matched with, never its name: ``param``
(floating, in a trainable half), ``stat`` (floating, in another state half such as
BatchNorm statistics), ``opt`` (floating, in the optimizer half), ``counter``
(integer: step counts) and ``rng`` (RNG state, never converted).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import numpy as np

from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.trees import split_halves
from hybridcheck.flaxmodels.halves import OPT

__all__ = ["Leaf", "Unit", "read_side", "leaf_name", "module_of"]

WRAPPERS = frozenset({"params", "value", "raw_value", "batch_stats", "variables"})
"""Path parts that wrap a leaf without naming it (collections, ``{'value': x}``)."""

CANONICAL = {
    "kernel": "kernel",
    "w": "kernel",
    "weight": "kernel",
    "weights": "kernel",
    "bias": "bias",
    "b": "bias",
    "scale": "scale",
    "gamma": "scale",
    "beta": "bias",
    "embedding": "embedding",
    "embeddings": "embedding",
    "mean": "mean",
    "var": "var",
    "variance": "var",
}
"""Leaf names that mean the same thing in Linen, NNX and hand-written models."""

_AUTO = re.compile(r"^(.*?)_(\d+)$")


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One leaf of a side's params.

    Attributes:
      index: position in ``jax.tree.leaves`` of the whole params.
      where: the full path as ``jax.tree_util.keystr`` writes it.
      keys: the path's keys (for the generated source).
      half: the half it is in.
      words: normalised path parts (lower case, wrappers and numbers dropped).
      numbers: the path's numbers in order (Linen ``Dense_1``, NNX ``layers/1``).
      tokens: words and numbers in path order (``('dense', '1', 'kernel')``).
      shape, dtype: the array's.
      kind: ``param``, ``stat``, ``opt``, ``counter`` or ``rng``.
    """

    index: int
    where: str
    keys: tuple[Any, ...]
    half: str
    words: tuple[str, ...]
    numbers: tuple[int, ...]
    tokens: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: Any
    kind: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class Unit:
    """What the matcher pairs: a whole leaf, or one layer (``layer``) of a leaf
    stacked along its leading axis."""

    leaf: Leaf
    layer: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.leaf.shape if self.layer is None else self.leaf.shape[1:]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def numbers(self) -> tuple[int, ...]:
        extra = () if self.layer is None else (self.layer,)
        return self.leaf.numbers + extra

    @property
    def label(self) -> str:
        return self.leaf.where + ("" if self.layer is None else f"[{self.layer}]")


def _key_name(key: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def _normalise(
    parts: list[Any],
) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    words: list[str] = []
    numbers: list[int] = []
    tokens: list[str] = []
    named = [
        n
        for n, part in enumerate(parts)
        if not (isinstance(part, int) or str(part).isdigit())
        and str(part).lower() not in WRAPPERS
    ]
    last = named[-1] if named else -1
    for n, part in enumerate(parts):
        if isinstance(part, int) or str(part).isdigit():
            numbers.append(int(part))
            tokens.append(str(int(part)))
            continue
        text = str(part).lower()
        if text in WRAPPERS:
            continue
        auto = _AUTO.match(text)
        if auto:
            text = auto.group(1)
            numbers.append(int(auto.group(2)))
        words.append(CANONICAL.get(text, text) if n == last else text)
        tokens += [words[-1]] + ([auto.group(2)] if auto else [])
    return tuple(words), tuple(numbers), tuple(tokens)


def leaf_name(leaf: Leaf) -> str:
    """The canonical leaf name (``kernel``, ``bias``, ...), ``""`` if none."""
    return leaf.words[-1] if leaf.words else ""


def module_of(leaf: Leaf) -> tuple[str, ...]:
    """The normalised module path (the words before the leaf name)."""
    return leaf.words[:-1]


def _kind(half: str, dtype: Any, case: HybridCase) -> str:
    if half in case.rng_halves or jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return "rng"
    if not np.issubdtype(dtype, np.inexact):
        return "counter"
    if half == OPT:
        return "opt"
    return "stat" if half in case.non_trainable else "param"


def read_side(case: HybridCase, params: Any) -> list[Leaf]:
    """Every leaf of ``params`` (laid out as ``case`` lays it out), classified.

    Raises:
      TypeError: if ``params`` is not one pytree per half.
    """
    split_halves(params, labels=case.halves, name=f"{case.name}.init()", min_halves=1)
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    halves = case.halves
    out = []
    for i, (path, x) in enumerate(flat):
        names = [_key_name(k) for k in path]
        if halves is not None and isinstance(names[0], int):
            half = halves[names[0]]
        else:
            half = str(names[0])
        dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        words, numbers, tokens = _normalise(names[1:])
        out.append(
            Leaf(
                index=i,
                where=jax.tree_util.keystr(path),
                keys=tuple(path),
                half=half,
                words=words,
                numbers=numbers,
                tokens=tokens,
                shape=tuple(np.shape(x)),
                dtype=dtype,
                kind=_kind(half, dtype, case),
            )
        )
    return out
