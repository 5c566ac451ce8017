"""``hybridcheck verify`` in this process: load the targets, run ``verify``, print
the report, write the outputs, return the exit code. The supervised worker runs
this; so may tests and notebooks (user code that ends the process ends it then).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from hybridcheck.engine.profiles import PROFILES
from hybridcheck.entrypoints.options import OUTPUTS
from hybridcheck.entrypoints.targets import TargetError, load_target
from hybridcheck.report.results import EXIT_CODES

__all__ = ["verify_in_process"]


def _watchdog(seconds: float) -> threading.Timer:
    """Ends this process if the run outlives every case's budget by a margin (only
    in process: the supervisor watches its worker instead)."""
    from hybridcheck.engine.guard import real_exit

    def fire() -> None:
        print(
            f"hybridcheck: TIMED OUT (exit {EXIT_CODES['timed out']}): still running "
            f"{seconds:.0f} s after start, past every case's --timeout: a step is "
            "stuck inside compiled code (an endless lax.while_loop, a collective "
            "waiting for a device); exiting",
            file=sys.stderr,
            flush=True,
        )
        real_exit(EXIT_CODES["timed out"])

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def _status_writer(path: str | None) -> Callable[..., None]:
    def write(**event: Any) -> None:
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(event) + "\n")

    return write


def _command(args: argparse.Namespace) -> str:
    parts = ["hybridcheck", "verify", *args.targets]
    if args.profile != "ci":
        parts += ["--profile", args.profile]
    return " ".join(shlex.quote(p) for p in parts)


def _load(args: argparse.Namespace, status: Callable[..., None]) -> list[Any]:
    from hybridcheck.cases import builtin_cases

    if not args.targets:
        return builtin_cases()
    cases = []
    for target in args.targets:
        status(event="import", target=target)
        cases += load_target(target)
    return cases


def verify_in_process(argv: Sequence[str], *, status: str | None = None) -> int:
    """``hybridcheck verify`` in this process; returns the exit code.

    ``status``: a file the supervisor reads (JSON lines: what is being done, and
    last the exit code). User code that ends this process ends it: only ``main``
    (a worker process) makes that a verdict.
    """
    from hybridcheck.entrypoints.cli import parse_args, usage_problems

    args, code = parse_args(argv)
    if args is None:
        return code
    if usage_problems(args):
        return EXIT_CODES["usage"]
    say = _status_writer(status)
    code = _verify(args, say, supervised=status is not None)
    say(event="done", exit=code)
    return code


def _unknown_invariants(names: list[str], cases: list[Any]) -> str:
    """Why an ``--invariant`` name is unknown ("" when every one is known)."""
    from hybridcheck.invariants import REGISTRY

    known = [*REGISTRY, *(n for c in cases for n in c.extra_checks)]
    for name in names:
        if name not in known:
            close = [k for k in known if name and (name in k or k in name)][:3]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            return (
                f"--invariant {name!r}: no such invariant{hint} (the names: "
                "hybridcheck verify --list-invariants, or the README's table)"
            )
    return ""


def _verify(
    args: argparse.Namespace, say: Callable[..., None], supervised: bool
) -> int:
    from hybridcheck.cases import builtin_cases
    from hybridcheck.engine.guard import abort_reason, guarded
    from hybridcheck.engine.verify import verify
    from hybridcheck.report.render import headline
    from hybridcheck.report.results import Report

    if args.list:
        for case in builtin_cases():
            print(f"{case.name:28s} {case.description}")
        return 0
    if args.list_invariants:
        from hybridcheck.invariants import REGISTRY

        for name, inv in REGISTRY.items():
            print(f"{name:38s} {inv.catches}")
        return 0
    with guarded():
        try:
            cases = _load(args, say)
        except TargetError as exc:
            print(f"hybridcheck verify: error: {exc}", file=sys.stderr)
            return EXIT_CODES["usage"]
        except BaseException as exc:  # noqa: BLE001 - the target's code ended the run
            why = abort_reason(exc)
            if why is None:
                return EXIT_CODES["interrupted"]
            print(headline(Report([], args.profile, {}, aborted=why)))
            return EXIT_CODES["aborted"]
    if not cases:  # a target that names an empty list: nothing to verify
        code = EXIT_CODES["nothing ran"]
        named = ", ".join(args.targets)
        print(f"hybridcheck: NOTHING RAN (exit {code}): {named} named no case (empty)")
        return code
    unknown = _unknown_invariants(args.invariant or [], cases)
    if unknown:
        print(f"hybridcheck verify: error: {unknown}", file=sys.stderr)
        return EXIT_CODES["usage"]
    start = time.perf_counter()
    # Progress with elapsed time per case goes to a person at a terminal; a CI log
    # gets it when asked (--progress); --quiet silences it everywhere.
    show = not args.quiet and (args.progress or sys.stderr.isatty())

    def progress(line: str) -> None:
        say(event="progress", line=line)
        if show and not line.endswith("..."):
            print(
                f"[{time.perf_counter() - start:6.1f}s] {line}",
                file=sys.stderr,
                flush=True,
            )

    timeout: Any = PROFILES[args.profile].timeout
    if args.timeout is not None:
        timeout = args.timeout or None
    say(event="loaded", cases=len(cases), timeout=timeout)
    watchdog = (
        None if supervised or not timeout else _watchdog(timeout * len(cases) + 120.0)
    )
    reproduce = args.reproduce
    if reproduce and reproduce.startswith("@"):
        reproduce = pathlib.Path(reproduce[1:]).read_text().strip()
    try:
        report = verify(
            cases,
            profile=args.profile,
            invariants=args.invariant,
            progress=progress,
            timeout=timeout,
            debug=args.debug,
            reproduce=reproduce,
        )
    except (ValueError, TypeError) as exc:
        print(f"hybridcheck verify: error: {exc}", file=sys.stderr)
        return EXIT_CODES["usage"]
    finally:
        if watchdog is not None:
            watchdog.cancel()
    report.command = _command(args)
    print(report.table())
    for flag in OUTPUTS:
        path = getattr(args, flag)
        if path:
            text = {"json": report.to_json, "junit": report.to_junit}.get(
                flag, report.to_markdown
            )
            pathlib.Path(path).write_text(text())
    return report.exit_code
