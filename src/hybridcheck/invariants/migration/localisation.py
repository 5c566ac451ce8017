"""Where a failed migration parts from the original: the first module, in forward
order, whose output deviates beyond the before model's float32 noise, and the
first, backward from the loss, whose gradient does.

Both sides' losses run op by op on the example (before in float32 and float64,
after in float64 on the converted params) with every Linen and NNX module call
recorded (``compat.intercept_module_calls``); the two sequences of calls are
aligned (``_align``), and each pair's output, input and their cotangents are
compared as the invariants compare the loss. Runs only when a comparison fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from hypothesis import HealthCheck, Phase, given, settings

from hybridcheck import compat
from hybridcheck.describe.migration_case import MigrationCase, MigrationSubject
from hybridcheck.describe.subject import Example, to64
from hybridcheck.invariants.migration._align import Row, off, rows, undone
from hybridcheck.invariants.migration._calls import trace
from hybridcheck.invariants.migration.deviation import Deviation, deviation

__all__ = [
    "DRAWS",
    "Localisation",
    "draw_examples",
    "localise",
    "localise_subject",
    "localised",
]

DRAWS = 10
"""Examples :func:`localise` draws when none is given."""


def _say(d: Deviation) -> str:
    return f"{d.units:.3g}x float32 noise (float64 relative {d.rel64:.3g})"


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: equal if identical
class Localisation:
    """Both models' module calls on one example, aligned and compared.

    Attributes:
      case: the migration's name.
      rows: every module call of either model in forward order (the order they
        returned: a module after the modules it called), counterparts paired.
      loss: the after loss's deviation from the before loss.
      forward: the first pair of counterparts whose output deviates beyond the
        before model's float32 noise on it (``None``: none does).
      gradient: the first pair, backward from the loss, the cotangent of whose
        output or input deviates (``None``: none does).
      note: why no cotangent was observed, if so.
    """

    case: str
    rows: tuple[Row, ...]
    loss: Deviation
    forward: Row | None
    gradient: Row | None
    note: str = ""

    @property
    def pairs(self) -> list[Row]:
        """The rows that pair a before call with its after counterpart."""
        return [r for r in self.rows if r.before and r.after]

    def lines(self, where: str = "") -> list[str]:
        """The two lines a failure message gets: where the forward passes part,
        and the first gradient to differ (``where`` names the example)."""
        return [
            f"where they part{where}: {self._forward()}",
            f"first gradient to differ, backward from the loss: {self._gradient()}",
        ]

    def _forward(self) -> str:
        r = self.forward
        if r is not None and r.output is not None:
            if r.input is not None and off(r.input):
                earlier = [p for p in self.pairs[: self.pairs.index(r)] if p.output]
                agreed = [p for p in earlier if not off(p.output)][-1:]
                return (
                    f"{r.names}: its input already deviates {_say(r.input)}, its "
                    f"output {r.output.units:.3g}x: the difference is in code "
                    "before it, outside the modules both sides have"
                    + "".join(f" (the last that agrees: {p.names})" for p in agreed)
                )
            same = "the same input, " if r.input is not None else ""
            return (
                f"{r.names}: {same}its output deviates {_say(r.output)}: the module "
                "itself differs (its code, or the params convert gave it)"
            )
        n = len(self.pairs)
        inner = [r for r in self.pairs if off(r.output)]
        layout = (
            f" (inside modules that agree, {len(inner)} differ by an internal "
            f"layout they undo, the first {inner[0].names})"
            if inner
            else ""
        )
        if not off(self.loss):
            return (
                "not in the forward pass: the loss and the output of every module "
                f"both sides have ({n}) agree{layout}"
            )
        alone = [
            f"before {r.before.name}" for r in self.rows if not r.after and r.before
        ]
        alone += [
            f"after {r.after.name}" for r in self.rows if not r.before and r.after
        ]
        last = f" (the last: {self.pairs[-1].names})" if n else ""
        return (
            f"past the {n} modules both sides have{last}, which agree{layout}: the "
            f"loss deviates {_say(self.loss)}: the difference is in code outside them "
            "(the loss, a reduction, a residual)"
            + (f"; without a counterpart: {', '.join(alone[:3])}" if alone else "")
            + (" ..." if len(alone) > 3 else "")
        )

    def _gradient(self) -> str:
        g = self.gradient
        if g is None:
            seen = [r for r in self.pairs if r.output_grad or r.input_grad]
            if not seen:
                why = self.note or "every module ran more than once: a loop, vmap"
                return f"not observed ({why})"
            agree = "the cotangents of every module's input and output agree"
            if off(self.loss) or self.forward is not None:
                return f"none: {agree}"
            return (
                f"none: {agree}, as the loss does: a step that differs differs in "
                "its update or the state it threads, not in the loss or its gradient"
            )
        if g.output_grad is not None and off(g.output_grad):
            if self.forward is not None or off(self.loss):
                return (
                    f"{g.names}: the cotangent of its output deviates "
                    f"{_say(g.output_grad)} (the forward pass already differs)"
                )
            later = self.pairs[self.pairs.index(g) + 1 :]
            fine = [r for r in later if r.input_grad and not off(r.input_grad)][:1]
            return (
                f"{g.names}: the cotangent of its output deviates "
                f"{_say(g.output_grad)}: the backward pass differs in code after it, "
                "outside the modules both sides have"
                + "".join(f" (the next that agrees: {r.names})" for r in fine)
            )
        assert g.input_grad is not None
        return (
            f"{g.names}: the cotangent of its output agrees, of its input deviates "
            f"{_say(g.input_grad)}: its backward pass differs (a custom VJP, a "
            "stop_gradient)"
        )

    def __str__(self) -> str:
        def cell(d: Deviation | None) -> str:
            return "-" if d is None else f"{d.units:.3g}x"

        head = f"{self.case}: loss deviates {_say(self.loss)}"
        table = [
            f"  {r.names}: output {cell(r.output)}, input {cell(r.input)}, "
            f"d/doutput {cell(r.output_grad)}, d/dinput {cell(r.input_grad)}"
            for r in self.rows
        ]
        return "\n".join([head, *table, *(f"  {line}" for line in self.lines())])


def localise_subject(ms: MigrationSubject, e: Example) -> Localisation:
    """:func:`localise` on a runnable migration and one of its examples (the
    compiled passes are kept in ``ms.memo``)."""
    cache = ms.memo.setdefault("localise", {})
    before32 = trace(ms.before.loss, e.params, e.batch, cache)
    with compat.enable_x64():
        b64 = to64(e.batch)
        before64 = trace(ms.before.loss, to64(e.params), b64, cache)
        after64 = trace(ms.after.loss, ms.convert64(e.params), b64, cache)
    compared = tuple(rows(before32, before64, after64))
    pairs = [r for r in compared if r.before and r.after]
    ahead = [r for r in pairs if off(r.output) and not undone(r, compared)]
    back = [
        r
        for r in reversed(pairs)
        if (off(r.output_grad) or off(r.input_grad))
        and not undone(r, compared, gradient=True)
    ]
    # Backward order visits a module before the modules it called: the leaf-most.
    inside = {k for r in back for k in r.within}
    back = [r for r in back if compared.index(r) not in inside]
    return Localisation(
        ms.name,
        compared,
        deviation("loss", before64.loss, after64.loss, before32.loss),
        ahead[0] if ahead else None,
        back[0] if back else None,
        before32.note or before64.note or after64.note,
    )


def draw_examples(case: MigrationCase, n: int = 10) -> list[Example]:
    """The first ``n`` examples the case's strategy draws, the same every time
    (not inside a Hypothesis test)."""
    drawn: list[Example] = []

    @settings(
        database=None,
        derandomize=True,
        max_examples=n,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case.examples())
    def draw(e: Example) -> None:
        drawn.append(e)

    draw()
    return drawn


def _worst_example(case: MigrationCase) -> tuple[MigrationSubject, Example]:
    """Of the first ``DRAWS`` examples drawn, the one whose loss deviates most
    (the latest of equals)."""
    drawn = draw_examples(case, DRAWS)
    ms = case.subject(drawn[0].params)

    def units(e: Example) -> float:
        before32 = ms.before.loss_fn(e.params, e.batch)
        with compat.enable_x64():
            b64 = to64(e.batch)
            before64 = ms.before.loss64(to64(e.params), b64)
            after64 = ms.after.loss64(ms.convert64(e.params), b64)
        return deviation("loss", before64, after64, before32).units

    scored = [(units(e), i) for i, e in enumerate(drawn)]
    return ms, drawn[max(scored)[1]]


def localise(case: MigrationCase, example: Example | None = None) -> Localisation:
    """Where the after model of ``case`` parts from the before model on one example.

    Runs both sides' losses op by op (before in float32 and float64, after in
    float64 on ``case.convert`` of the params), records every Linen and NNX module
    call with its path, aligns the two sequences and compares each pair's output,
    input and the loss's gradient with respect to each, in units of the before
    model's float32 noise on that value.

    Args:
      case: the migration.
      example: the params (the before model's), batch and lr to run (a
        ``hybridcheck.describe.subject.Example``); default: of the first ``DRAWS``
        examples ``case.examples()`` draws, the one whose loss deviates most
        (deterministic). Not inside a Hypothesis test: pass ``example`` there.

    Returns:
      A :class:`Localisation`: ``.forward`` is the first pair of modules whose
      outputs deviate, ``.gradient`` the first, backward from the loss, whose
      cotangents do; ``.lines()`` say so in two lines, ``str()`` adds the table.

    Example::

        loc = hc.localise(MIGRATION)
        print(loc)  # before 'Dense_1' (Dense) vs after 'mlp/linear2' (Linear): ...
    """
    if not isinstance(case, MigrationCase):
        raise TypeError(
            f"localise takes a hc.MigrationCase, got {type(case).__name__}: a "
            "HybridCase has no original to compare with"
        )
    why = compat.module_call_support()
    if why is not None:  # pragma: no cover - below the floor
        raise NotImplementedError(f"localisation is not available: {why}")
    if example is not None:
        return localise_subject(case.subject(example.params), example)
    return localise_subject(*_worst_example(case))


@contextlib.contextmanager
def localised(ms: MigrationSubject, e: Example | None, what: str) -> Iterator[None]:
    """Re-raises a failed comparison with where the models part on ``e`` (``what``
    names the example); a localisation that itself fails says why, never more."""
    try:
        yield
    except AssertionError as exc:
        if e is None:
            raise
        try:
            lines = localise_subject(ms, e).lines(f" ({what})")
        except Exception as err:  # noqa: BLE001 - the verdict stands regardless
            first = (str(err).splitlines() or [""])[0]
            lines = [
                f"where they part: not localised ({what}): the localisation raised "
                f"{type(err).__name__}: {first}"
            ]
        raise AssertionError(f"{exc}" + "".join(f"\n  {x}" for x in lines)) from None
