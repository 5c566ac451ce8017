"""The Hypothesis searches behind ``verify``: one shared search, then shrinking.

Per case, one derandomized search draws examples and runs every pending invariant on
each (sharing the example's gradient and step runs through the Subject's memo); each
invariant that failed then gets a search of its own that shrinks its counterexample
within a time budget.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import FailedHealthCheck, Unsatisfiable

from hybridcheck.describe.returns import BadReturn, preflight
from hybridcheck.describe.subject import Example, shape_key
from hybridcheck.describe.usercode import UserCodeError, format_error
from hybridcheck.engine.messages import DEBUG, failure_cause, failure_message
from hybridcheck.invariants import InvariantNotApplicable

Check = Callable[[Any, Example], None]

NOW: dict[str, str] = {"invariant": ""}
"""What the latest check is (the supervised worker reports it, so that a worker
killed mid-check is said to have been running it)."""

NA_FACTOR = 4
"""A sampled invariant tries at most this many times its target of examples."""


def _preflight(subject: Any, example: Example) -> None:
    """The case's own functions on ``example`` (a MigrationCase: its before side)."""
    side = getattr(subject, "before", subject)
    preflight(side, example.params, example.batch)


def preflight_then(check: Check, subject: Any, example: Example) -> None:
    """``check`` after the case's own preflight: what a shared cause shrinks with."""
    _preflight(subject, example)
    check(subject, example)


class _AllFailed(Exception):
    """Every invariant under search has failed: nothing left to learn."""


class CaseTimeout(BaseException):  # noqa: N818 - a signal, not an error
    """The case's time budget ran out. A BaseException so that neither Hypothesis
    nor the checks' ``except Exception`` swallow it. ``call``: the user call that
    had not returned, ``(case, where, seconds)``, if one was running."""

    def __init__(self, call: tuple[str, str, float] | None = None) -> None:
        super().__init__(call)
        self.call = call


@dataclasses.dataclass
class Running:
    """What the verifier is doing right now, for a report cut short.

    Attributes:
      invariant: the invariant being checked.
      example: the example it is being checked on.
      deadline: ``time.perf_counter()`` value after which the case stops (or None).
    """

    invariant: str = ""
    example: Any = None
    deadline: float | None = None
    since: float = 0.0

    def start(self, invariant: str, example: Any) -> None:
        """Records the next check; raises CaseTimeout once past the deadline (the
        cooperative half of the budget: the other is an alarm signal)."""
        self.invariant, self.example = invariant, example
        self.since = time.perf_counter()
        NOW["invariant"] = invariant
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise CaseTimeout

    def overdue(self) -> bool:
        """Past the deadline: an exception now is the timeout surfacing through a
        library (an alarm inside a ``jax.debug.callback`` comes back wrapped)."""
        return self.deadline is not None and time.perf_counter() > self.deadline


@dataclasses.dataclass
class Tally:
    """What the shared search learned about one invariant."""

    examples: int = 0
    na_reasons: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    failure: tuple[str, Example] | None = None
    cause: str = ""
    not_sampled: int = 0
    buckets: set[str] = dataclasses.field(default_factory=set)

    def wants(self, bucket: str, target: int | None) -> bool:
        """Whether a sampled invariant runs on an example of shape ``bucket``: always
        on the first example of a bucket, then until it has held or failed on
        ``target`` examples (None: every example). Examples outside its
        precondition do not count (a sample of n/a verdicts is no evidence), up to
        ``NA_FACTOR * target`` tries: one that is n/a everywhere stops spending."""
        if bucket not in self.buckets:
            self.buckets.add(bucket)
            return True
        tries = self.examples + len(self.na_reasons)
        return target is None or (self.examples < target and tries < NA_FACTOR * target)


def settings_for(examples: int, *, shrink: bool) -> settings:
    """Derandomized, no database, no deadline; shrinking only when asked."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        print_blob=False,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )


def search(
    active: dict[str, Check],
    subject: Any,
    drawn: st.SearchStrategy[Example],
    examples: int,
    tallies: dict[str, Tally],
    running: Running,
    targets: dict[str, int | None] | None = None,
    prepare: dict[str, Check] | None = None,
) -> str:
    """One Hypothesis search: every invariant runs on each drawn example.

    An example is rejected (drawn again) only when *every* pending invariant finds it
    not applicable; an invariant that fails is not run again. Invariants in
    ``targets`` (the expensive ones) run on the first example of each shape bucket
    and then until ``targets[name]`` examples gave a verdict; ``prepare[name]``
    runs on each example it runs on, before any user code. No shrinking here:
    :func:`shrink` does that for each failed invariant alone.

    Fills ``tallies`` (one per invariant of ``active``) as it goes, so a search cut
    short leaves what it learned. Returns, if drawing examples itself raised (the
    case's init or batch function crashed), that traceback, else "".
    """

    drawn_any = [False]

    @settings_for(examples, shrink=False)
    @given(example=drawn)
    def run(example: Example) -> None:
        applicable = False
        pending = [n for n, t in tallies.items() if t.failure is None]
        if not pending:
            raise _AllFailed
        drawn_any[0] = True
        targets_ = targets or {}
        bucket = str(shape_key(example)) if targets_ else ""
        chosen = []
        for name in pending:
            if name in targets_ and not tallies[name].wants(bucket, targets_[name]):
                tallies[name].not_sampled += 1
                applicable = True  # the others decide; never redraw for a sample
            else:
                chosen.append(name)
        for name in chosen:
            if name in (prepare or {}):
                running.start(name, example)
                prepare[name](subject, example)  # type: ignore[index]
        running.start(
            "the case's own loss on the example (before any invariant)", example
        )
        try:
            _preflight(subject, example)
        except UserCodeError as exc:  # the case's own fault: one cause for all
            for name in pending:
                tallies[name].failure = (failure_message(name, exc), example)
                tallies[name].cause = failure_cause(exc)
            raise _AllFailed from None
        for name in chosen:
            tally = tallies[name]
            running.start(name, example)
            start = time.perf_counter()
            try:
                active[name](subject, example)
            except InvariantNotApplicable as exc:
                tally.na_reasons.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a failure is a finding
                if running.overdue():
                    raise CaseTimeout from exc
                tally.failure = (failure_message(name, exc), example)
                tally.cause = failure_cause(exc)
                applicable = True
            else:
                tally.examples += 1
                applicable = True
            finally:
                tally.seconds += time.perf_counter() - start
        running.start("drawing the next example (the case's batches strategy)", None)
        if not applicable:
            reject()
        if all(t.failure is not None for t in tallies.values()):
            raise _AllFailed

    running.start("drawing the first example (the case's batches strategy)", None)
    try:
        run()
    except (_AllFailed, Unsatisfiable, FailedHealthCheck):
        if not drawn_any[0]:
            return (
                f"[{getattr(subject, 'name', 'case')}] the case's batches (or lr) "
                "strategy drew no usable example: a .filter() or assume() rejects "
                "them all, or every drawn batch was unusable"
            )
    except Exception as exc:  # noqa: BLE001 - init or batches crashed while drawing
        if running.overdue():
            raise CaseTimeout from exc
        if isinstance(exc, BadReturn):
            return str(exc)
        if isinstance(exc, UserCodeError):
            return f"{exc}\n{format_error(exc, debug=DEBUG.get())}"
        return f"drawing an example raised:\n{format_error(exc, debug=DEBUG.get())}"
    return ""


class ShrinkBudgetSpent(BaseException):  # noqa: N818 - a signal, not an error
    """Stops Hypothesis mid-shrink. A BaseException so Hypothesis does not take it
    for a failure of the test (it catches Exception) and lets it through at once."""


def shrink(
    name: str,
    check: Check,
    subject: Any,
    drawn: st.SearchStrategy[Example],
    examples: int,
    shrink_seconds: float,
    running: Running,
) -> tuple[str, Example] | None:
    """A search for ``name`` alone, shrinking its failure; None if none is found.

    Shrinking replays the step many times (eagerly, for some invariants), so it is
    bounded: the first candidate drawn after ``shrink_seconds`` have passed since
    the first failure stops the search, and the smallest failure so far (the latest:
    Hypothesis only tries candidates smaller than its current best) is reported.
    """
    best: dict[str, Any] = {}

    @settings_for(examples, shrink=True)
    @given(example=drawn)
    def prop(example: Example) -> None:
        if best and time.perf_counter() > best["deadline"]:
            raise ShrinkBudgetSpent
        running.start(name, example)
        try:
            check(subject, example)
        except InvariantNotApplicable:
            reject()
        except Exception as exc:
            if running.overdue():
                raise CaseTimeout from exc
            best.update(
                message=failure_message(name, exc),
                example=example,
                deadline=best.get("deadline", time.perf_counter() + shrink_seconds),
            )
            raise

    try:
        prop()
    except (ShrinkBudgetSpent, Exception):  # noqa: BLE001 - we report `best`
        pass
    return (best["message"], best["example"]) if best else None
