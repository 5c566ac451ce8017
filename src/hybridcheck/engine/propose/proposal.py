"""What ``propose_convert`` hands back: the converters, the mapping and how each
entry was decided, what is unmatched, the verdict, and the source to commit."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["MappingEntry", "Proposal"]


@dataclasses.dataclass(frozen=True)
class MappingEntry:
    """One before unit and where it goes.

    Attributes:
      before, after: leaf paths (``[i]`` appended for one layer of a stacked leaf).
      transform: ``identity``, ``transpose (1, 0)``, ``reshape (4, 2, 2) -> (4, 4)``,
        a cast of a counter.
      how: what decided it: ``name``, ``shape`` (the only one of its kind and
        size), ``order`` (the order the forward passes consume them), ``oracle``
        (the float64 loss comparison chose it), or ``follows <param>`` (optimizer
        state that goes where its param went).
    """

    before: str
    after: str
    transform: str
    how: str


@dataclasses.dataclass
class Proposal:
    """A proposed checkpoint converter between a before and an after case.

    Attributes:
      before, after: the two cases' names.
      convert: ``convert(before_params) -> after_params`` in the case layout,
        ready for ``MigrationCase(convert=...)``; accepts float64.
      invert: the converter back.
      mapping: every matched unit (:class:`MappingEntry`).
      unmatched: ``(side, leaf path, reason)`` for what has no counterpart (RNG
        state, which is never converted, included).
      passed: the oracle found a converter under which the losses agree and the
        migration invariants hold on it. False: ``mapping`` is the closest found,
        and ``verdict`` says what failed.
      verdict: the migration invariants' verdict on the proposal, one line each.
      search: how the oracle searched (converters tried, whether the cap was hit).
      localisation: where the two models part, for a failed proposal (when
        ``hc.localise`` is available), else ``""``.
      seconds: how long the proposal took.
    """

    before: str
    after: str
    convert: Callable[[Any], Any]
    invert: Callable[[Any], Any]
    mapping: list[MappingEntry]
    unmatched: list[tuple[str, str, str]]
    passed: bool
    verdict: str
    search: str
    text: str = dataclasses.field(repr=False)
    localisation: str = ""
    seconds: float = 0.0

    def source(self) -> str:
        """The converter as a standalone Python module (``jax.numpy`` only, no
        hybridcheck import) defining ``convert(p, fresh=None)`` and
        ``invert(p, fresh=None)``; commit it with the migration. ``fresh`` (the
        receiving side's own ``init(key)``) is needed only where some leaf is not
        converted (RNG state)."""
        return self.text

    @property
    def decided(self) -> dict[str, int]:
        """How many units each kind of evidence decided (``follows`` merged)."""
        counts = Counter(e.how.split(" ")[0] for e in self.mapping)
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        """The mapping, the unmatched leaves and the verdict, as text."""
        width = max((len(e.before) for e in self.mapping), default=0)
        lines = [f"propose_convert: {self.before} -> {self.after}", "mapping:"]
        for e in self.mapping:
            lines.append(
                f"  {e.before:<{width}}  ->  {e.after}  [{e.transform}; {e.how}]"
            )
        decided = ", ".join(f"{n} by {how}" for how, n in self.decided.items())
        lines.append(f"decided: {decided or 'nothing'}")
        lines.append(f"search: {self.search}")
        if self.unmatched:
            lines.append("unmatched:")
            lines += [f"  {side} {where}: {why}" for side, where, why in self.unmatched]
        lines.append(f"verdict: {'PASSED' if self.passed else 'FAILED'}")
        lines += [f"  {line}" for line in self.verdict.splitlines()]
        if self.localisation:
            lines.append(f"where the models part: {self.localisation}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
