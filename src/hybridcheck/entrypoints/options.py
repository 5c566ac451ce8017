"""Everything about a ``hybridcheck verify`` command line that can be checked before
any case runs: option values, output paths, target forms. A problem is one line
and exit code 2, never a traceback after the budget is spent."""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any

from hybridcheck.entrypoints.targets import TargetError, check_target

__all__ = ["OUTPUTS", "problems", "timeout_seconds"]

OUTPUTS = ("json", "junit", "markdown")


def timeout_seconds(text: str) -> float:
    """``--timeout`` as seconds: a finite number >= 0 (0: no limit).

    Raises:
      ValueError: with the one-line reason (argparse shows it).
    """
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"expected a finite number of seconds >= 0 (0: no limit), got {text}"
        )
    return value


def _output_problem(flag: str, path: str) -> str:
    target = pathlib.Path(path)
    parent = target.parent if str(target.parent) else pathlib.Path(".")
    if target.is_dir():
        return f"--{flag} {path} is a folder; give a file path (e.g. {path}/report)"
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists() and not ancestor.is_dir():
            return f"--{flag} {path}: {ancestor} is a file, not a folder"
        if ancestor.exists():
            break
    if not parent.exists():
        return f"--{flag} {path}: the folder {parent} does not exist; create it first"
    if not os.access(parent, os.W_OK):
        return f"--{flag} {path}: the folder {parent} is not writable"
    if target.exists() and not os.access(target, os.W_OK):
        return f"--{flag} {path}: the file exists and is not writable"
    existed = target.exists()
    try:  # the only sure test (root passes os.access; /proc refuses new files)
        with open(target, "a"):
            pass
    except OSError as exc:
        return f"--{flag} {path}: cannot be written ({exc.strerror or exc})"
    if not existed:
        target.unlink(missing_ok=True)
    return ""


def problems(args: Any) -> list[str]:
    """One line per problem of a parsed ``verify`` command line ([] when none)."""
    found = []
    seen: dict[str, str] = {}
    for flag in OUTPUTS:
        path = getattr(args, flag, None)
        if not path:
            continue
        resolved = os.path.abspath(path)
        if resolved in seen:
            found.append(f"--{seen[resolved]} and --{flag} write the same file {path}")
        seen[resolved] = flag
        problem = _output_problem(flag, path)
        if problem:
            found.append(problem)
    for target in args.targets:
        try:
            check_target(target)
        except TargetError as exc:
            found.append(str(exc))
            continue
        source = os.path.abspath(target.rpartition(":")[0])
        if source in seen:
            found.append(
                f"--{seen[source]} {target.rpartition(':')[0]} would overwrite the "
                "target's own file; write the report elsewhere"
            )
    if args.reproduce and args.reproduce.startswith("@"):
        blob = pathlib.Path(args.reproduce[1:])
        if not blob.is_file():
            found.append(f"--reproduce {args.reproduce}: no such file {blob}")
    return found
