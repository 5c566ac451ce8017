"""``hybridcheck verify`` — the PR gate's command line.

Exit codes: 0 every invariant holds; 1 an invariant failed; 2 the target could not
be loaded or the arguments are wrong (one line on stderr says why).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from hybridcheck.profiles import PROFILES

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
    from hybridcheck.case import HybridCase
    from hybridcheck.migration import MigrationCase

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridcheck``; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)

    from hybridcheck.cases import builtin_cases
    from hybridcheck.verify import verify

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

    def progress(line: str) -> None:
        if not args.quiet and not line.endswith("..."):
            print(
                f"[{time.perf_counter() - start:6.1f}s] {line}",
                file=sys.stderr,
                flush=True,
            )

    try:
        report = verify(
            cases, profile=args.profile, invariants=args.invariant, progress=progress
        )
    except (ValueError, TypeError) as exc:
        print(f"hybridcheck: error: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    if args.json:
        pathlib.Path(args.json).write_text(report.to_json())
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
