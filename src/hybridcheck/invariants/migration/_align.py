"""Which module call of the after model is which of the before model's.

The two models' module calls, in the order they returned, are aligned by a
weighted longest common subsequence: two calls can be counterparts when their
outputs have as many elements (a ``(n, heads, head_dim)`` output is the
``(n, heads * head_dim)`` one reshaped); a pair whose outputs agree within the
before model's float32 noise weighs most, then the same last path entry, the same
class, the same shapes. Unmatched calls on either side (a residual Linen wrapped in
a module, an activation NNX applies as a function) are kept as rows of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from hybridcheck.invariants.migration._calls import Call, Trace
from hybridcheck.invariants.migration.deviation import Deviation, deviation

__all__ = ["AGREE_UNITS", "Row", "align", "compare", "off", "rows", "undone"]

AGREE_UNITS = 1.0
"""A module's output (or cotangent) deviating by more than the before model's own
float32 noise on it deviates; within, it agrees. Only the first module past this
is reported, and only once the whole model already failed across examples."""


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: equal if identical
class Row:
    """One module call of either model, or a pair of counterparts, compared.

    Attributes:
      before, after: the call on each side (``None``: no counterpart).
      output, input: the after value's deviation from the before value, in units
        of the before model's float32 noise on it (``None``: not compared).
      output_grad, input_grad: the same for the loss's gradient with respect to
        the output and to the input (their cotangents).
      within: the positions, in the list of rows, of the calls this one ran
        inside (on either side), innermost first.
    """

    before: Call | None
    after: Call | None
    output: Deviation | None = None
    input: Deviation | None = None
    output_grad: Deviation | None = None
    input_grad: Deviation | None = None
    within: tuple[int, ...] = ()

    @property
    def names(self) -> str:
        """``before 'norm' (LayerNorm) vs after 'norm' (LayerNorm)``."""
        b = self.before.name if self.before else "(none)"
        a = self.after.name if self.after else "(none)"
        return f"before {b} vs after {a}"


def off(d: Deviation | None) -> bool:
    """Whether a compared value deviates beyond the noise (``None``: not compared)."""
    return d is not None and d.units > AGREE_UNITS


def undone(row: Row, rows: Sequence[Row], *, gradient: bool = False) -> bool:
    """Whether a module ``row`` ran inside agrees (its output, or with
    ``gradient`` its cotangents): then ``row`` differs by an internal layout the
    enclosing module undoes (heads permuted in the query, key, value and output
    projections alike), not by what it computes."""
    for k in row.within:
        r = rows[k]
        if not (r.before and r.after):
            continue
        if gradient and (r.output_grad or r.input_grad):
            if not (off(r.output_grad) or off(r.input_grad)):
                return True
        elif not gradient and r.output is not None and not off(r.output):
            return True
    return False


def compare(
    what: str, b64: np.ndarray | None, a64: np.ndarray | None, b32: np.ndarray | None
) -> Deviation | None:
    """``deviation`` of two flattened values, or ``None`` if they cannot be."""
    if b64 is None or a64 is None or b64.size != a64.size or b64.size == 0:
        return None
    noise = b32 if b32 is not None and b32.size == b64.size else b64
    return deviation(what, b64, a64, noise)


def _last(call: Call) -> str:
    return call.path[-1] if call.path else ""


def _weight(b: Call, a: Call, b32: Call | None) -> float:
    if b.output is None or a.output is None or b.output.size != a.output.size:
        return 0.0
    d = compare("output", b.output, a.output, b32.output if b32 else None)
    return (
        1.0
        + 2.0 * (d is not None and d.units <= AGREE_UNITS)
        + 0.5 * (_last(b) == _last(a))
        + 0.25 * (b.type_name == a.type_name)
        + 0.25 * (b.shapes == a.shapes)
    )


def align(
    before: Sequence[Call], after: Sequence[Call], before32: Sequence[Call]
) -> list[tuple[int | None, int | None]]:
    """``(before index, after index)`` pairs in forward order; ``None`` where a
    call has no counterpart. ``before32`` is the before model's float32 run (the
    noise), matched to ``before`` by position when it has as many calls."""
    noise = list(before32) if len(before32) == len(before) else [None] * len(before)
    n, m = len(before), len(after)
    score = np.zeros((n + 1, m + 1))
    weight = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            weight[i, j] = _weight(before[i], after[j], noise[i])
            take = score[i, j] + weight[i, j] if weight[i, j] > 0 else -1.0
            score[i + 1, j + 1] = max(score[i, j + 1], score[i + 1, j], take)
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if (
            i > 0
            and j > 0
            and weight[i - 1, j - 1] > 0
            and np.isclose(score[i, j], score[i - 1, j - 1] + weight[i - 1, j - 1])
        ):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and (j == 0 or score[i - 1, j] >= score[i, j - 1]):
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def _parents(calls: Sequence[Call]) -> list[int | None]:
    """The call each call ran inside: in the order calls return, the next one
    less deeply nested."""
    return [
        next((m for m in range(k + 1, len(calls)) if calls[m].depth < c.depth), None)
        for k, c in enumerate(calls)
    ]


def _within(
    pairs: list[tuple[int | None, int | None]], b: Sequence[Call], a: Sequence[Call]
) -> list[tuple[int, ...]]:
    """For each row, the rows of the calls it ran inside, on either side."""
    found: list[tuple[int, ...]] = []
    for side, calls in ((0, b), (1, a)):
        parents = _parents(calls)
        row_of = {p[side]: k for k, p in enumerate(pairs) if p[side] is not None}
        for k, pair in enumerate(pairs):
            own = pair[side]
            chain: list[int] = []
            at = None if own is None else parents[own]
            while at is not None:
                chain.append(row_of[at])
                at = parents[at]
            if side == 0:
                found.append(tuple(chain))
            else:
                found[k] += tuple(r for r in chain if r not in found[k])
    return found


def rows(before32: Trace, before64: Trace, after64: Trace) -> list[Row]:
    """Every module call of the two float64 runs, aligned and compared in units of
    the before model's float32 noise (``before32``'s call at the same position)."""
    b, a = before64.calls, after64.calls
    noise = before32.calls if len(before32.calls) == len(b) else b
    pairs = align(b, a, before32.calls)
    out = []
    for (i, j), within in zip(pairs, _within(pairs, b, a), strict=True):
        if i is None or j is None:
            x = None if i is None else b[i]
            out.append(Row(x, None if j is None else a[j], within=within))
            continue
        x, y, z = b[i], a[j], noise[i]
        out.append(
            Row(
                x,
                y,
                compare("output", x.output, y.output, z.output),
                compare("input", x.input, y.input, z.input),
                compare("d/doutput", x.output_grad, y.output_grad, z.output_grad),
                compare("d/dinput", x.input_grad, y.input_grad, z.input_grad),
                within,
            )
        )
    return out
