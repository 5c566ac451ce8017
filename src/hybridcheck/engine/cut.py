"""What a case's report says about its examples and about a case cut short: the
counterexample as drawn, a result from what the search learned, and a case stopped
by its budget, by user code ending the run, or by Ctrl-C.
"""

from __future__ import annotations

import time
from typing import Any

from hybridcheck.describe.examples import describe, encode
from hybridcheck.describe.subject import Example
from hybridcheck.engine import search as _search
from hybridcheck.engine.guard import abort_reason
from hybridcheck.report.results import (
    FAILED,
    HELD,
    NOT_APPLICABLE,
    CaseReport,
    InvariantResult,
)

__all__ = ["cut_short", "fill", "record", "shown", "stopped", "timeout_text"]


def shown(example: Any, origin: str) -> str:
    """The counterexample as the report shows it: what was drawn, and how it was
    found."""
    if isinstance(example, Example):
        return f"{describe(example)} ({origin})"
    return f"{example} ({origin})"


def record(result: InvariantResult, case: Any, example: Any, origin: str) -> None:
    result.counterexample = shown(example, origin)
    if isinstance(example, Example):
        result.reproduce = encode(case.name, example)


def fill(result: InvariantResult, tally: _search.Tally) -> None:
    """A result from what the search learned (n/a if no example applied)."""
    result.examples = tally.examples
    result.skipped_examples = len(tally.na_reasons)
    result.not_sampled = tally.not_sampled
    result.seconds = tally.seconds
    if tally.failure is None and tally.examples == 0:
        result.status = NOT_APPLICABLE
        reason = tally.na_reasons[0] if tally.na_reasons else "no example drawn"
        result.message = f"no example met the precondition: {reason}"


def stopped(case: Any, exc: BaseException) -> tuple[CaseReport, str]:
    """A case whose init ended the run (user code) or was interrupted."""
    why = abort_reason(exc)
    if why is None:
        return CaseReport(case.name, []), "interrupted (Ctrl-C)"
    return CaseReport(case.name, []), f"aborted: {why}"


def timeout_text(
    timeout: float | None, exc: _search.CaseTimeout, running: _search.Running
) -> str:
    """What did not return when the case's budget ran out, and on which example."""
    head = f"the case's {timeout:g} s budget (--timeout) ran out"
    elapsed = f"{time.perf_counter() - running.since:.1f} s in it"
    if exc.call is not None:
        _case, where, seconds = exc.call
        what = (
            f"{head}: the user's {where} did not return ({seconds:.1f} s in it) while "
            f"{running.invariant} ran"
        )
    elif running.invariant.startswith("drawing"):
        what = f"{head} while {running.invariant} ran: it did not return ({elapsed})"
    else:
        what = (
            f"{head} while {running.invariant or 'the search'} ran: the user's step, "
            f"compiled, (or hybridcheck's replay of it) did not return ({elapsed})"
        )
    example = running.example
    on = f"\nexample: {describe(example)}" if isinstance(example, Example) else ""
    return (
        f"{what}: an endless loop or a blocking call, or a case too slow for the "
        f"budget (raise --timeout){on}"
    )


def cut_short(
    why: str,
    case: Any,
    tallies: dict[str, _search.Tally],
    results: dict[str, InvariantResult],
    running: _search.Running,
) -> None:
    """Results of a case cut short: the invariant that was running fails, naming
    the example; what finished keeps its verdict; the rest is not run."""
    for name, tally in tallies.items():
        result = results[name]
        if result.status != HELD:  # already final: failed, or n/a with its reason
            continue
        if tally.failure is not None:
            fill(result, tally)
            result.status, result.message = FAILED, tally.failure[0]
            result.cause = tally.cause
            record(result, case, tally.failure[1], "first failing example; not shrunk")
        elif name == running.invariant:
            fill(result, tally)
            result.status = NOT_APPLICABLE
            result.message = f"not finished: {why.split(':')[0]}"
            record(result, case, running.example, "the example it was running")
        elif tally.examples or tally.na_reasons:
            fill(result, tally)
            result.message = f"partial: {why} after {tally.examples} examples"
        else:
            result.status, result.message = NOT_APPLICABLE, f"not run: {why}"
