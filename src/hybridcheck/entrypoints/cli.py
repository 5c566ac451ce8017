"""``hybridcheck verify`` — the PR gate's command line.

Exit codes: 0 every invariant holds; 1 an invariant failed, including a case that
overran its ``--timeout`` (a step that hangs is a broken step: the report names the
invariant and example it was running); 2 the target could not be loaded or the
arguments are wrong (one line on stderr says why); 130 interrupted by Ctrl-C (the
partial report is printed first).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pathlib
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from hybridcheck.engine.profiles import PROFILES

__all__ = ["main", "load_target"]


class TargetError(Exception):
    """A TARGET that cannot be turned into HybridCases (exit code 2)."""


def load_target(target: str) -> list[Any]:
    """Loads ``path/to/file.py:NAME`` or ``package.module:NAME`` as HybridCases.

    NAME may be a HybridCase, a list/tuple of them, or a zero-argument callable
    returning either.

    Raises:
      TargetError: with a one-line reason.
    """
    from hybridcheck.describe.hybrid_case import HybridCase
    from hybridcheck.describe.migration_case import MigrationCase

    case_types = (HybridCase, MigrationCase)

    module_part, sep, name = target.rpartition(":")
    if not sep or not module_part or not name:
        raise TargetError(
            "TARGET must be 'path/to/file.py:NAME' or 'package.module:NAME', "
            f"got {target!r}"
        )
    try:
        if module_part.endswith(".py") or "/" in module_part:
            path = pathlib.Path(module_part)
            if not path.is_file():
                raise TargetError(f"no such file: {module_part}")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise TargetError(f"cannot import {module_part}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
    except TargetError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module failed to import
        raise TargetError(
            f"importing {module_part} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not hasattr(module, name):
        raise TargetError(f"{module_part} has no attribute {name!r}")
    obj = getattr(module, name)
    if callable(obj) and not isinstance(obj, case_types):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001
            raise TargetError(
                f"calling {name}() failed: {type(exc).__name__}: {exc}"
            ) from exc
    cases = [obj] if isinstance(obj, case_types) else obj
    if (
        not isinstance(cases, list | tuple)
        or not cases
        or not all(isinstance(c, case_types) for c in cases)
    ):
        raise TargetError(
            f"{target} must be a HybridCase or MigrationCase, a non-empty list of "
            f"them, or a callable returning one; got {type(obj).__name__}"
        )
    return list(cases)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridcheck",
        description="Property-based verification of hybrid Flax Linen + NNX training.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check every invariant on hybrid cases")
    verify.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="path/to/file.py:NAME or package.module:NAME (default: built-in cases)",
    )
    verify.add_argument("--profile", choices=list(PROFILES), default="ci")
    verify.add_argument("--json", metavar="PATH", help="write the report as JSON")
    verify.add_argument("--list", action="store_true", help="list built-in cases")
    verify.add_argument(
        "--invariant",
        action="append",
        metavar="NAME",
        help="only this invariant (repeatable)",
    )
    verify.add_argument("--quiet", action="store_true", help="no progress lines")
    verify.add_argument(
        "--progress",
        action="store_true",
        help="progress lines even when stderr is not a terminal (a CI log)",
    )
    verify.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds each case may take (default: the profile's; 0: no limit)",
    )
    verify.add_argument(
        "--junit", metavar="PATH", help="write JUnit XML (one testcase per invariant)"
    )
    verify.add_argument(
        "--markdown",
        metavar="PATH",
        help="write the table as Markdown (a CI job summary, a PR comment)",
    )
    _add_matrix(sub)
    return parser


def _add_matrix(sub: Any) -> None:
    """``hybridcheck matrix``: the same targets on each (flax, jax) release pair."""
    from hybridcheck.entrypoints.pairs import AXES

    matrix = sub.add_parser(
        "matrix",
        help="verify TARGETs in one uv environment per (flax, jax) pair",
        description="Builds (or reuses) one environment per pair, installs the "
        "project and hybridcheck, runs `hybridcheck verify` there and prints one "
        "table: rows = pairs, columns = cases. Exit 0 all pass, 1 a pair failed or "
        "cannot import, 2 bad arguments.",
    )
    matrix.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="path/to/file.py:NAME or package.module:NAME",
    )
    matrix.add_argument(
        "--pairs",
        nargs="+",
        action="extend",
        default=[],
        metavar="WORD",
        help="newest (default), oldest, all, broken or flax=X,jax=Y; several allowed",
    )
    matrix.add_argument(
        "--axis",
        action="append",
        default=[],
        choices=list(AXES),
        help="also run each pair with this behaviour flag set (repeatable)",
    )
    matrix.add_argument("--profile", choices=list(PROFILES), default="ci")
    matrix.add_argument(
        "--project",
        default=".",
        metavar="PATH",
        help="the project installed into each environment (default: .)",
    )
    matrix.add_argument(
        "--envs",
        metavar="DIR",
        help="environments and logs (default: PROJECT/.hybridcheck-envs)",
    )
    matrix.add_argument("--json", metavar="PATH", help="write every row as JSON")
    matrix.add_argument(
        "--markdown", metavar="PATH", help="write the table as Markdown"
    )
    matrix.add_argument(
        "--progress",
        action="store_true",
        help="progress on stderr even when it is not a terminal",
    )


def _watchdog(seconds: float) -> threading.Timer:
    """Ends the process if the run outlives every case's budget by a margin: a step
    stuck inside compiled code cannot be interrupted from Python."""

    def fire() -> None:
        print(
            f"hybridcheck: error: still running {seconds:.0f} s after start, past "
            "every case's --timeout: a step is stuck inside compiled code (an "
            "endless lax.while_loop, a collective waiting for a device); exiting",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridcheck``; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    if args.command == "matrix":
        from hybridcheck.entrypoints.matrix import run

        return run(args)

    from hybridcheck.cases import builtin_cases
    from hybridcheck.engine.verify import verify

    if args.list:
        for case in builtin_cases():
            print(f"{case.name:28s} {case.description}")
        return 0
    try:
        cases = (
            [c for t in args.targets for c in load_target(t)]
            if args.targets
            else builtin_cases()
        )
    except TargetError as exc:
        print(f"hybridcheck: error: {exc}", file=sys.stderr)
        return 2

    start = time.perf_counter()

    # Progress with elapsed time per case goes to a person at a terminal; a CI log
    # gets it when asked (--progress); --quiet silences it everywhere.
    show = not args.quiet and (args.progress or sys.stderr.isatty())

    def progress(line: str) -> None:
        if show and not line.endswith("..."):
            print(
                f"[{time.perf_counter() - start:6.1f}s] {line}",
                file=sys.stderr,
                flush=True,
            )

    timeout: Any = PROFILES[args.profile].timeout
    if args.timeout is not None:
        timeout = args.timeout or None
    watchdog = _watchdog(timeout * len(cases) + 120.0) if timeout else None
    try:
        report = verify(
            cases,
            profile=args.profile,
            invariants=args.invariant,
            progress=progress,
            timeout=timeout,
        )
    except (ValueError, TypeError) as exc:
        print(f"hybridcheck: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if watchdog is not None:
            watchdog.cancel()
    print(report.table())
    for path, text in (
        (args.json, report.to_json),
        (args.junit, report.to_junit),
        (args.markdown, report.to_markdown),
    ):
        if path:
            pathlib.Path(path).write_text(text())
    if report.interrupted:
        return 130
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
