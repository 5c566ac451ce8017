"""``hybridcheck propose-convert BEFORE AFTER [--write converter.py]``: the checkpoint
converter of a migration, proposed from its two models and proven on them.

Prints the mapping (how each leaf was decided), the unmatched leaves and the
migration invariants' verdict on the proposal. Exit 0 only when the proposal
passes; 1 when no converter makes the two models agree (the closest mapping is
printed, and written with ``--write`` under a FAILED header); 2 for usage errors
(a TARGET that is not one HybridCase, a bad flag); 4 when user code raised.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from hybridcheck.entrypoints.targets import TargetError, load_target
from hybridcheck.report.results import EXIT_CODES

__all__ = ["COMMAND", "main"]

COMMAND = "propose-convert"
PROG = f"hybridcheck {COMMAND}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Propose the checkpoint converter of a Linen -> NNX migration "
        "from the two models alone, and run the migration invariants on it.",
        epilog="exit codes: 0 the proposal passes; 1 no converter makes the models "
        "agree; 2 usage; 4 user code raised",
    )
    for side in ("before", "after"):
        parser.add_argument(
            side,
            metavar=side.upper(),
            help=f"the {side} model: path/to/file.py:NAME or package.module:NAME "
            "naming a HybridCase (or a callable returning one)",
        )
    parser.add_argument("--write", metavar="PATH", help="write the converter's source")
    for side in ("before", "after"):
        parser.add_argument(
            f"--{side}-eval",
            metavar="TARGET",
            help=f"the {side} model with its stochastic layers off",
        )
    parser.add_argument(
        "--cap", type=int, default=256, help="converters the oracle tries at most"
    )
    return parser


def _case(target: str, what: str) -> Any:
    from hybridcheck.describe.hybrid_case import HybridCase

    found = load_target(target)
    if len(found) != 1 or not isinstance(found[0], HybridCase):
        kinds = ", ".join(type(c).__name__ for c in found) or "nothing"
        raise TargetError(f"{what} {target} must name one HybridCase, got {kinds}")
    return found[0]


def main(argv: Sequence[str]) -> int:
    """Runs the command on ``argv`` (the words after ``propose-convert``)."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.cap < 1:
        print(
            f"{PROG}: error: --cap must be at least 1, got {args.cap}", file=sys.stderr
        )
        return EXIT_CODES["usage"]
    if args.write and pathlib.Path(args.write).is_dir():
        print(f"{PROG}: error: --write {args.write} is a folder", file=sys.stderr)
        return EXIT_CODES["usage"]
    try:
        sides = {
            name: _case(target, name.upper().replace("_", "-"))
            for name, target in (
                ("before", args.before),
                ("after", args.after),
                ("before_eval", args.before_eval),
                ("after_eval", args.after_eval),
            )
            if target is not None
        }
    except TargetError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_CODES["usage"]
    from hybridcheck.engine.propose import propose_convert

    try:
        proposal = propose_convert(**sides, cap=args.cap)
    except Exception as exc:  # noqa: BLE001 - the user's models raised
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CODES["aborted"]
    print(proposal.summary())
    if args.write:
        pathlib.Path(args.write).write_text(proposal.source())
        state = "" if proposal.passed else " (it FAILED: read its header)"
        print(f"wrote the converter to {args.write}{state}")
    return EXIT_CODES["passed"] if proposal.passed else EXIT_CODES["failed"]
