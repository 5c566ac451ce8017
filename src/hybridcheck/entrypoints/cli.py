"""``hybridcheck verify`` — the PR gate's command line, and ``hybridcheck matrix``.

``main`` is the command: it checks the command line up front (exit 2, one line),
then runs the verifier in a supervised worker process
(:mod:`~hybridcheck.entrypoints.supervise`), so that nothing user code does can end
the run as a pass. ``verify_in_process`` is the same command in this process (what
the worker runs; tests and notebooks may call it). Exit codes: see ``EXIT_HELP``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from hybridcheck.engine.profiles import PROFILES
from hybridcheck.entrypoints.options import problems, timeout_seconds
from hybridcheck.entrypoints.targets import TargetError, load_target
from hybridcheck.report.results import EXIT_CODES

__all__ = ["EXIT_HELP", "TargetError", "load_target", "main", "verify_in_process"]

EXIT_HELP = (
    "exit codes:\n"
    + "\n".join(f"  {code:3d}  {verdict}" for verdict, code in EXIT_CODES.items())
    + (
        "\n0 only when every selected invariant ran on at least one example and held; "
        "user code that exits, crashes or hangs never passes."
    )
)


class _Parser(argparse.ArgumentParser):
    """Errors as one line (exit 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _timeout(text: str) -> float:
    try:
        return timeout_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hybridcheck",
        description="Property-based verification of hybrid Flax Linen + NNX training.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    verify = sub.add_parser(
        "verify",
        help="check every invariant on hybrid cases",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        "--list-invariants",
        action="store_true",
        help="list the invariants (name, what a failure catches)",
    )
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
        type=_timeout,
        metavar="SECONDS",
        help="seconds each case may take (default: the profile's; 0: no limit)",
    )
    verify.add_argument(
        "--junit", metavar="PATH", help="write JUnit XML (one testcase per invariant)"
    )
    verify.add_argument(
        "--markdown",
        metavar="PATH",
        help="write the report as Markdown (a CI job summary, a PR comment)",
    )
    verify.add_argument(
        "--reproduce",
        metavar="BLOB",
        help="run exactly one failing example: the blob of a report's `reproduce:` "
        "line, or @FILE holding it",
    )
    verify.add_argument(
        "--debug",
        action="store_true",
        help="tracebacks with hybridcheck's own frames (default: yours only)",
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


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace | None, int]:
    """The parsed command line, or None and the exit code (argparse, --help)."""
    try:
        return _parser().parse_args(argv), 0
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return None, int(exc.code or 0)


def usage_problems(args: argparse.Namespace) -> bool:
    found = problems(args)
    for line in found:
        print(f"hybridcheck verify: error: {line}", file=sys.stderr)
    return bool(found)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridcheck`` (and ``python -m hybridcheck``); the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["propose-convert"]:  # its own parser: entrypoints/propose_cli
        from hybridcheck.entrypoints.propose_cli import main as propose

        return propose(words[1:])
    args, code = parse_args(argv)
    if args is None:
        return code
    if args.command == "matrix":
        from hybridcheck.entrypoints.matrix import run

        return run(args)
    if usage_problems(args):
        return EXIT_CODES["usage"]
    if args.list or args.list_invariants:
        return verify_in_process(
            ["verify", "--list" if args.list else "--list-invariants"]
        )
    from hybridcheck.entrypoints.supervise import run as supervised

    return supervised(list(sys.argv[1:] if argv is None else argv), args)


def verify_in_process(argv: Sequence[str], *, status: str | None = None) -> int:
    """``hybridcheck verify`` in this process (see
    :func:`hybridcheck.entrypoints.in_process.verify_in_process`)."""
    from hybridcheck.entrypoints import in_process

    return in_process.verify_in_process(argv, status=status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
