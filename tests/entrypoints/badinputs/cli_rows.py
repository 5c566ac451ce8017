"""The CLI rows of the bad-input corpus (issue 21): each a user's case file bent one
way, the command line it is run with, and what the gate must answer (exit code,
party named, line budget, no hybridcheck traceback). The rows are split over
several test files (``test_bad_cli_*.py``) so that pytest-xdist, which gives each
worker whole files, runs them side by side.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any

import pytest

from tests.entrypoints.badinputs.runner import (
    FRAME,
    OUR_FRAME,
    console_script,
    run_cli,
)
from tests.entrypoints.badinputs.template import line_of, render

# The exit codes of ``hybridcheck verify``, for --help, the README and the product to
# match. 0 is the only pass: every selected invariant ran on at least one example and
# held.
EXIT_CODES: dict[str, int] = {
    "ok": 0,  # every selected invariant ran on >= 1 example and held
    "failed": 1,  # an invariant failed, or the case's own code or data is broken
    #               at run time (it raised, returned the wrong thing, drew bad batches)
    "usage": 2,  # bad option, output path, target or case field, found up front,
    #              before any case runs (a target that cannot be imported included)
    "nothing_ran": 3,  # no selected invariant ran: the selection does not apply to
    #                    the case(s), or there is no case at all
    "user_abort": 4,  # user code ended the run: SystemExit (any code), os._exit,
    #                   KeyboardInterrupt or another BaseException raised by it,
    #                   a crash (segfault) or a kill (out of memory) of the worker
    "timeout": 5,  # a case overran --timeout: a call into user code did not return
}

# Lines of stdout + stderr together, per outcome.
LINE_BUDGET: dict[str, int] = {
    "ok": 25,
    "failed": 60,  # "a user error raised in a step is shown once in under 60 lines"
    "usage": 5,  # one line that says what is wrong and the fix
    "nothing_ran": 15,  # the line that says why, then item 5's table and n/a list
    "user_abort": 30,
    "timeout": 30,
}
API_LINE_BUDGET = 5  # lines of str(exception) for a bad argument of the Python API

# The parties a report must name. The product calls the user's functions "the
# user's step" today; the case file names them my_init / my_loss / my_step (a frame
# "in my_loss" names the loss; the step's echoed line "jax.grad(my_loss)(" does not).
# A counterexample prints "batch: ..." for every case, so the batches source must be
# named as a source, not as the word "batch".
STEP = r"(user's|your) (train[_ ])?step|\bmy_step\b"
LOSS = r"(user's|your) loss\b|\bmy_loss\b(?!\))"
INIT = r"(user's|your) init\b|\bmy_init\b"
BATCHES = (
    r"(user's|your|case's) batch(es)?\b( strategy| source)?|"
    r"batches (strategy|source|yielded|drew|returned|raised)|\bbatches=|\bBATCHES\b"
)
USER_FILE = r"user_case\.py"
DUPLICATE = r"duplicate|twice|more than once|same name|two cases named"
EXITED = r"SystemExit|sys\.exit|os\._exit|exit(ed)?\b"
ELAPSED = r"\d+(\.\d+)? ?s\b(?! budget)"  # the time it ran, not the --timeout given
NOT_RETURNED = r"did not return|timed out|time limit|still running"

# Three cheap invariants: enough for a cause repeated per invariant to show.
INV3 = [
    "--invariant",
    "grads_match_params",
    "--invariant",
    "update_is_descent",
    "--invariant",
    "all_finite",
]
DEV = ["--profile", "dev"]
HANG = ["--timeout", "2"]
SLEEP = "time.sleep(600)"

# "One cause, one block": the user's exception message may appear on at most this
# many lines (the verdict headline, the one block's cause line and the last line of
# its one traceback; item 5's layout), not counting the user's source line that the
# traceback echoes; and the user's raising frame is printed in one traceback only.
ONCE = 3

# Never printed for a bad input: a cause blamed on us, numpy noise from our code.
FORBID_ALWAYS = (r"hybridcheck bug", r"RuntimeWarning")


@dataclasses.dataclass(frozen=True)
class CliRow:
    """One ``hybridcheck verify`` run on a generated user file ``user_case.py``.

    ``args`` may use ``{case}`` (the case file), ``{tmp}`` (the row's folder) and
    ``{dir}`` (the case file's folder).
    """

    id: str
    args: list[str]
    expect: str  # a key of EXIT_CODES
    names: tuple[str, ...]  # regexes the output must contain (case-insensitive)
    hooks: dict[str, str] = dataclasses.field(default_factory=dict)
    budget: int | None = None  # lines; default LINE_BUDGET[expect]
    forbid: tuple[str, ...] = ()  # regexes the output must not contain
    once: str | None = None  # the user's exception message: shown once (see ONCE)
    user_line: str | None = None  # text of the user's line that must be named
    untouched: bool = False  # no user step or loss may run (checked up front)
    layout: str = "flat"  # where the case file lives; see _lay_out
    script: bool = False  # the console script instead of python -m
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    limit: float = 150.0  # seconds before the test gives up on the process


def _cli(
    id: str,
    args: list[str],
    expect: str,
    *names: str,
    **kwargs: Any,
) -> Any:
    return pytest.param(CliRow(id, args, expect, names, **kwargs), id=id)


CASE = "{case}:CASE"
RUN3 = [CASE, *DEV, *INV3]


def _exit_rows() -> list[Any]:
    """Process exits in user code: never a pass, always 'your code ended the run'."""
    rows = []
    for where, party in (("step", STEP), ("loss", LOSS), ("init", INIT)):
        for label, code, mechanism in (
            ("sys-exit-0", "sys.exit(0)", EXITED),
            ("sys-exit-3", "sys.exit(3)", EXITED),
            ("os-exit-0", "os._exit(0)", EXITED),
            ("keyboard-interrupt", "raise KeyboardInterrupt", "KeyboardInterrupt"),
        ):
            if where != "step" and label in ("sys-exit-3", "keyboard-interrupt"):
                continue
            if where == "init" and label == "os-exit-0":
                continue
            rows.append(
                _cli(
                    f"{where}-{label}",
                    RUN3,
                    "user_abort",
                    party,
                    mechanism,
                    hooks={f"{where}_hook": code},
                )
            )
    rows += [
        _cli(
            "step-sys-exit-1",
            RUN3,
            "user_abort",
            STEP,
            EXITED,
            hooks={"step_hook": "sys.exit(1)"},
        ),
        _cli(
            "step-sys-exit-message",
            RUN3,
            "user_abort",
            STEP,
            "bye from my step",
            hooks={"step_hook": 'sys.exit("bye from my step")'},
        ),
        _cli(
            "step-os-exit-2-is-not-usage",
            RUN3,
            "user_abort",
            STEP,
            EXITED,
            hooks={"step_hook": "os._exit(2)"},
        ),
        _cli(
            "step-base-exception-subclass",
            RUN3,
            "user_abort",
            STEP,
            "Abort",
            hooks={
                "prelude": "class Abort(BaseException):\n    pass",
                "step_hook": 'raise Abort("aborted by my step")',
            },
            user_line='raise Abort("aborted by my step")',
        ),
        _cli(
            "step-segfault",
            RUN3,
            "user_abort",
            STEP,
            r"segmentation fault|SIGSEGV|signal 11|crash",
            hooks={"step_hook": "import ctypes; ctypes.string_at(0)"},
        ),
        _cli(
            "step-killed-like-oom",
            RUN3,
            "user_abort",
            STEP,
            r"SIGKILL|signal 9|killed|out of memory",
            hooks={"step_hook": "import signal; os.kill(os.getpid(), signal.SIGKILL)"},
        ),
        _cli(
            "batches-sys-exit-0",
            RUN3,
            "user_abort",
            EXITED,
            hooks={
                "prelude": "def _exit_batch(b):\n    sys.exit(0)",
                "batches_tail": ".map(_exit_batch)",
            },
            user_line="sys.exit(0)",
        ),
        _cli(
            "import-sys-exit-0",
            RUN3,
            "user_abort",
            USER_FILE,
            EXITED,
            hooks={"prelude": "sys.exit(0)"},
        ),
        _cli(
            "import-os-exit-0",
            RUN3,
            "user_abort",
            USER_FILE,
            EXITED,
            hooks={"prelude": "os._exit(0)"},
        ),
        _cli(
            "import-keyboard-interrupt",
            RUN3,
            "user_abort",
            USER_FILE,
            "KeyboardInterrupt",
            hooks={"prelude": "raise KeyboardInterrupt"},
        ),
        _cli(
            "target-callable-sys-exit-0",
            ["{case}:make", *DEV, *INV3],
            "user_abort",
            r"\bmake\b",
            EXITED,
            hooks={"epilogue": "def make():\n    sys.exit(0)"},
        ),
    ]
    return rows


def _import_rows() -> list[Any]:
    """User code that breaks at import: the target cannot be loaded (exit 2), and the
    user's file and line are named with the user's own traceback, not ours."""
    return [
        _cli(
            "import-raises",
            RUN3,
            "usage",
            USER_FILE,
            "broken at import",
            hooks={"prelude": 'raise RuntimeError("broken at import")'},
            user_line='raise RuntimeError("broken at import")',
            once="broken at import",
            budget=LINE_BUDGET["failed"],
        ),
        _cli(
            "import-syntax-error",
            RUN3,
            "usage",
            USER_FILE,
            "SyntaxError",
            hooks={"prelude": "def broken(:\n    pass"},
            user_line="def broken(:",
            budget=LINE_BUDGET["failed"],
        ),
        _cli(
            "import-missing-dependency",
            RUN3,
            "usage",
            USER_FILE,
            "no_such_dependency_xyz",
            hooks={"prelude": "import no_such_dependency_xyz"},
            user_line="import no_such_dependency_xyz",
            budget=LINE_BUDGET["failed"],
        ),
    ]


def _hang_rows() -> list[Any]:
    """A call into user code that does not return within --timeout: exit 5, naming
    the call and the elapsed time, never blamed on an invariant."""
    common = {"forbid": (r"(?-i:/ \w+ FAILED\b)",), "limit": 40.0}
    return [
        _cli(
            "hang-step",
            [*RUN3, *HANG],
            "timeout",
            STEP,
            NOT_RETURNED,
            ELAPSED,
            hooks={"step_hook": SLEEP},
            **common,
        ),
        _cli(
            "hang-loss",
            [*RUN3, *HANG],
            "timeout",
            LOSS,
            NOT_RETURNED,
            ELAPSED,
            hooks={"loss_hook": SLEEP},
            **common,
        ),
        _cli(
            "hang-init",
            [*RUN3, *HANG],
            "timeout",
            INIT,
            NOT_RETURNED,
            ELAPSED,
            hooks={"init_hook": SLEEP},
            **common,
        ),
        _cli(
            "hang-batches",
            [*RUN3, *HANG],
            "timeout",
            BATCHES,
            NOT_RETURNED,
            ELAPSED,
            hooks={
                "prelude": "def _slow_batch(b):\n    time.sleep(600)\n    return b",
                "batches_tail": ".map(_slow_batch)",
            },
            **common,
        ),
        _cli(
            "hang-step-on-second-call",
            [*RUN3, *HANG],
            "timeout",
            STEP,
            NOT_RETURNED,
            ELAPSED,
            # The jitted step's Python body runs once (at trace time), so the hang
            # is a callback that blocks from the second execution on.
            hooks={
                "prelude": "_CALLS = [0]\n\n\n"
                "def _hang_from_the_second_call():\n"
                "    _CALLS[0] += 1\n"
                "    if _CALLS[0] > 1:\n"
                "        time.sleep(600)",
                "step_hook": "jax.debug.callback(_hang_from_the_second_call)",
            },
            **common,
        ),
        _cli(
            "hang-step-inside-compiled-code",
            [*RUN3, *HANG],
            "timeout",
            STEP,
            NOT_RETURNED,
            ELAPSED,
            hooks={"step_hook": "jax.debug.callback(lambda: time.sleep(600))"},
            **common,
        ),
    ]


def _output_rows() -> list[Any]:
    """Report paths that cannot be written: exit 2 before any case runs."""
    rows = []
    for flag in ("--json", "--junit", "--markdown"):
        name = flag.lstrip("-")
        for label, path, culprit in (
            ("missing-folder", "{tmp}/no/such/folder/report.out", "no/such/folder"),
            ("onto-a-directory", "{tmp}/adir", "adir"),
            ("file-used-as-folder", "{tmp}/afile/report.out", "afile"),
        ):
            rows.append(
                _cli(
                    f"{name}-{label}",
                    [*RUN3, flag, path],
                    "usage",
                    re.escape(flag),
                    culprit,
                    untouched=True,
                )
            )
    rows += [
        _cli(
            "json-into-proc",
            [*RUN3, "--json", "/proc/hybridcheck-report.json"],
            "usage",
            "--json",
            "/proc",
            untouched=True,
        ),
        _cli(
            "json-and-junit-same-path",
            [*RUN3, "--json", "{tmp}/r.out", "--junit", "{tmp}/r.out"],
            "usage",
            "--json",
            "--junit",
            untouched=True,
        ),
        _cli(
            "json-overwrites-the-target-file",
            [*RUN3, "--json", "{case}"],
            "usage",
            "--json",
            USER_FILE,
            untouched=True,
        ),
    ]
    return rows


def _option_rows() -> list[Any]:
    """Option values: checked up front, exit 2, one line naming the option."""
    timeout = [
        _cli(
            f"timeout-{label}",
            [*RUN3, "--timeout", value],
            "usage",
            "--timeout",
            untouched=True,
        )
        for label, value in (
            ("inf", "inf"),
            ("nan", "nan"),
            ("minus-1", "-1"),
            ("overflow-1e309", "1e309"),
            ("not-a-number", "ten"),
        )
    ]
    return [
        *timeout,
        _cli(
            "invariant-unknown",
            [CASE, *DEV, "--invariant", "no_such_invariant"],
            "usage",
            "--invariant",
            "no_such_invariant",
            untouched=True,
        ),
        _cli(
            "invariant-typo-suggests-the-fix",
            [CASE, *DEV, "--invariant", "all_finit"],
            "usage",
            "all_finit",
            r"all_finite\b",
            untouched=True,
        ),
        _cli(
            "invariant-empty-name",
            [CASE, *DEV, "--invariant", ""],
            "usage",
            "--invariant",
            untouched=True,
        ),
        _cli(
            "profile-unknown",
            [CASE, "--profile", "fastest"],
            "usage",
            "--profile",
            "fastest",
            untouched=True,
        ),
        _cli(
            "json-without-a-path",
            [CASE, *DEV, "--json"],
            "usage",
            "--json",
            untouched=True,
        ),
        # A selection that does not apply: its own exit, one line saying why.
        _cli(
            "invariant-roundtrip-on-a-hybridcase",
            [CASE, *DEV, "--invariant", "roundtrip"],
            "nothing_ran",
            "roundtrip",
            r"MigrationCase|migration",
            untouched=True,
        ),
        _cli(
            "invariant-state_is_threaded-without-state_fn",
            [CASE, *DEV, "--invariant", "state_is_threaded"],
            "nothing_ran",
            "state_is_threaded",
            "state_fn",
        ),
        _cli(
            "invariant-update_matches_tx-without-tx",
            [CASE, *DEV, "--invariant", "update_matches_tx"],
            "nothing_ran",
            "update_matches_tx",
            r"\btx\b",
        ),
        _cli(
            "invariant-sharded-on-one-device",
            [CASE, *DEV, "--invariant", "sharded_matches_single_device"],
            "nothing_ran",
            "sharded_matches_single_device",
            r"device",
            env={"XLA_FLAGS": ""},
        ),
    ]


def _target_rows() -> list[Any]:
    """TARGET strings: bad ones exit 2 with one line; the README's forms work."""
    bad = [
        ("no-colon", "{case}", ("TARGET", r"file\.py:NAME|:NAME")),
        ("empty-name", "{case}:", ("TARGET",)),
        ("empty-module", ":CASE", ("TARGET",)),
        ("two-colons", "{case}:CASE:X", (r"CASE:X|TARGET",)),
        ("missing-file", "{tmp}/no_such_file.py:CASE", ("no_such_file\\.py",)),
        ("missing-attribute", "{case}:NO_SUCH_CASE", ("NO_SUCH_CASE",)),
        ("not-a-case", "{case}:BATCHES", ("BATCHES", "HybridCase")),
        ("callable-needing-arguments", "{case}:my_loss", ("my_loss",)),
        ("a-directory", "{tmp}/adir:CASE", ("adir",)),
        ("not-a-python-file", "{tmp}/notes.txt:CASE", (r"notes\.txt",)),
        ("missing-module", "no_such_pkg_xyz.cases:CASE", ("no_such_pkg_xyz",)),
        ("callable-returning-none", "{case}:nothing", ("nothing", "None")),
        ("list-with-a-non-case", "{case}:MIXED", ("MIXED", "HybridCase")),
    ]
    epilogue = (
        "import dataclasses\n"
        "def nothing():\n    return None\n"
        "def no_cases():\n    return []\n"
        "MIXED = [CASE, 3]\n"
        "TWINS = [CASE, dataclasses.replace(CASE, description='another')]\n"
    )
    rows = [
        _cli(
            f"target-{label}",
            [target, *DEV, *INV3],
            "usage",
            *names,
            hooks={"epilogue": epilogue},
            untouched=True,
        )
        for label, target, names in bad
    ]
    rows += [
        _cli(
            "target-callable-returning-no-cases",
            ["{case}:no_cases", *DEV, *INV3],
            "nothing_ran",
            "no_cases",
            r"no case|nothing|empty",
            hooks={"epilogue": epilogue},
            untouched=True,
        ),
        _cli(
            "target-same-case-twice",
            [CASE, CASE, *DEV, *INV3],
            "usage",
            "tiny",
            DUPLICATE,
            untouched=True,
        ),
        _cli(
            "target-two-cases-one-name",
            ["{case}:TWINS", *DEV, *INV3],
            "usage",
            "tiny",
            DUPLICATE,
            hooks={"epilogue": epilogue},
            untouched=True,
        ),
        # The README's forms, run from the project folder: they must work.
        _cli(
            "module-form-console-script",
            ["my_project.hybrid_case:CASE", *DEV, *INV3],
            "ok",
            "tiny",
            layout="package",
            script=True,
        ),
        _cli(
            "module-form-python-m",
            ["my_project.hybrid_case:CASE", *DEV, *INV3],
            "ok",
            "tiny",
            layout="package",
        ),
        _cli(
            "module-form-namespace-package-console-script",
            ["my_project.hybrid_case:CASE", *DEV, *INV3],
            "ok",
            "tiny",
            layout="namespace",
            script=True,
        ),
        _cli(
            "file-target-imports-a-sibling-from-elsewhere",
            ["{dir}/user_case.py:CASE", *DEV, *INV3],
            "ok",
            "tiny",
            layout="sibling",
            hooks={"prelude": "from helpers import SCALE"},
        ),
        _cli(
            "file-target-imports-a-sibling-console-script",
            ["cases/user_case.py:CASE", *DEV, *INV3],
            "ok",
            "tiny",
            layout="sibling-from-project",
            hooks={"prelude": "from helpers import SCALE"},
            script=True,
        ),
    ]
    return rows


def _raise_rows() -> list[Any]:
    """User code that raises: exit 1, the cause once, the user's line on top."""
    return [
        _cli(
            "step-raises",
            RUN3,
            "failed",
            STEP,
            "ValueError",
            hooks={"step_hook": 'raise ValueError("boom-from-step")'},
            user_line='raise ValueError("boom-from-step")',
            once="boom-from-step",
        ),
        _cli(
            "loss-raises",
            RUN3,
            "failed",
            LOSS,
            "ValueError",
            hooks={"loss_hook": 'raise ValueError("boom-from-loss")'},
            user_line='raise ValueError("boom-from-loss")',
            once="boom-from-loss",
        ),
        _cli(
            "init-raises",
            RUN3,
            "failed",
            INIT,
            "ValueError",
            hooks={"init_hook": 'raise ValueError("boom-from-init")'},
            user_line='raise ValueError("boom-from-init")',
            once="boom-from-init",
        ),
        _cli(
            "step-pytree-mismatch-in-its-tree-map",
            RUN3,
            "failed",
            STEP,
            hooks={
                "step_return": 'jax.tree.map(lambda p, g: p - g, params, new["nnx"])'
            },
            user_line='jax.tree.map(lambda p, g: p - g, params, new["nnx"])',
        ),
        _cli(
            "batches-map-raises",
            RUN3,
            "failed",
            "ZeroDivisionError",
            hooks={
                "prelude": "def _bad_batch(b):\n    return 1 // 0",
                "batches_tail": ".map(_bad_batch)",
            },
            user_line="return 1 // 0",
            once="integer division or modulo by zero",
        ),
    ]


def _return_rows() -> list[Any]:
    """A loss or step that returns the wrong thing, named as itself (exit 1)."""
    not_ours = (r"hybridcheck bug", r"not in the case's loss or step")
    loss = [
        ("vector", "value * jnp.ones(3)", r"scalar|shape"),
        ("shape-1", "jnp.reshape(value, (1,))", r"scalar|shape"),
        ("python-int", "1", r"\bint\b"),
        ("none", "None", r"None"),
        ("nan", "value * jnp.nan", r"\bnan\b"),
        ("inf", "value + jnp.inf", r"\binf"),
        ("tuple-with-aux", '(value, {"aux": value})', r"tuple|scalar|has_aux"),
        ("string", '"loss"', r"\bstr\b|string"),
    ]
    step = [
        ("drops-a-half", '{"nnx": new["nnx"]}', r"linen"),
        ("none", "None", r"None"),
        ("tuple-with-metrics", "(new, 0.0)", r"tuple|structure|tree"),
        ("extra-half", '{**new, "extra": new["nnx"]}', r"extra"),
        ("renamed-half", '{"encoder": new["nnx"], "linen": new["linen"]}', "encoder"),
        ("flat-list", "jax.tree.leaves(new)", r"list|structure|tree"),
    ]
    # The same tree with other leaves: an invariant failure (grads_match_params)
    # that names the shape or dtype; the step need not be named as the party.
    same_tree = [
        ("leaf-with-new-axis", "jax.tree.map(lambda p: p[None], new)", r"shape"),
        (
            "float16-leaves",
            "jax.tree.map(lambda p: p.astype(jnp.float16), new)",
            r"float16",
        ),
    ]
    init = [
        ("none", "None", r"None"),
        ("one-half", '{"nnx": params["nnx"]}', r"half|halves"),
        (
            "integer-leaves",
            "jax.tree.map(lambda p: p.astype(jnp.int32), params)",
            r"int32|integer",
        ),
    ]
    rows = [
        _cli(
            f"loss-returns-{label}",
            RUN3,
            "failed",
            LOSS,
            detail,
            hooks={"loss_return": expr},
            # The loss's return is the cause: not a second block blaming the step
            # that differentiated it (one cause, one block, the right party).
            forbid=(*not_ours, r"NaN/Inf after one step", r"(user's|your) step raised"),
        )
        for label, expr, detail in loss
    ]
    rows += [
        _cli(
            f"step-returns-{label}",
            RUN3,
            "failed",
            STEP,
            detail,
            hooks={"step_return": expr},
            forbid=not_ours,
        )
        for label, expr, detail in step
    ]
    rows += [
        _cli(
            f"step-returns-{label}",
            RUN3,
            "failed",
            detail,
            hooks={"step_return": expr},
            forbid=not_ours,
        )
        for label, expr, detail in same_tree
    ]
    rows += [
        _cli(
            f"init-returns-{label}",
            RUN3,
            "failed",
            INIT,
            detail,
            hooks={"init_return": expr},
            forbid=not_ours,
        )
        for label, expr, detail in init
    ]
    return rows


def _batch_rows() -> list[Any]:
    """Batches the case's source yields that no step can use, named as the batches'
    fault, not the loss's or an invariant's (exit 1)."""
    blamed_elsewhere = (
        r"(user's|your) loss raised",
        r"(user's|your) step raised",
        r"NaN/Inf after one step",
        r"hybridcheck bug",
    )
    rows = [
        ("none", ".map(lambda b: None)", (r"None",)),
        ("inf", ".map(lambda b: (b[0] + np.inf, b[1]))", (r"\binf",)),
        (
            "1e38",
            ".map(lambda b: (b[0] * 0 + np.float32(1e38), b[1]))",
            (r"1(\.0+)?e\+?38|extreme|overflow|too large",),
        ),
        ("nan", ".map(lambda b: (b[0] * np.nan, b[1]))", (r"\bnan\b",)),
        ("string", '.map(lambda b: "batch")', (r"\bstr\b|string",)),
        ("empty-rows", ".map(lambda b: (b[0][:0], b[1][:0]))", (r"empty|\(0, ?2\)",)),
        ("filter-rejects-all", ".filter(lambda b: False)", (r"filter|unsatisf",)),
    ]
    out = [
        _cli(
            f"batches-yield-{label}",
            RUN3,
            "failed",
            BATCHES,
            *detail,
            hooks={"batches_tail": tail},
            forbid=blamed_elsewhere,
        )
        for label, tail, detail in rows
    ]
    out += [
        _cli(
            "batches-callable-returns-none",
            RUN3,
            "failed",
            BATCHES,
            "None",
            hooks={
                "epilogue": 'CASE = hc.HybridCase(**{**KWARGS, "batches": '
                "lambda key: None})"
            },
            forbid=blamed_elsewhere,
        ),
        # The user's loss raises on a batch of the wrong shape: shown once, the
        # loss's line on top, the drawn batch given as its shape.
        _cli(
            "batches-wrong-shape",
            RUN3,
            "failed",
            LOSS,
            r"\(4, ?6\)|\[4, ?6\]|4x6",  # the drawn x, of a width no param has
            hooks={"batches_tail": ".map(lambda b: (np.tile(b[0], (1, 3)), b[1]))"},
            user_line='code = hc.compat.module_with_params(ENCODER, params["nnx"])(x)',
            once="dot_general requires contracting dimensions",
            forbid=(r"hybridcheck bug",),
        ),
        _cli(
            "batches-not-a-pair",
            RUN3,
            "failed",
            LOSS,
            hooks={"batches_tail": ".map(lambda b: b[0])"},
            user_line="x, y = batch",
            once="too many values to unpack",
            forbid=(r"hybridcheck bug",),
        ),
    ]
    return out


CLI_ROWS = [
    _cli("control-correct-case-passes", RUN3, "ok", "tiny"),
    *_exit_rows(),
    *_import_rows(),
    *_hang_rows(),
    *_output_rows(),
    *_option_rows(),
    *_target_rows(),
    *_raise_rows(),
    *_return_rows(),
    *_batch_rows(),
]


def _lay_out(row: CliRow, tmp: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes the row's user files; returns (case file, working folder)."""
    source = render(**row.hooks)
    (tmp / "adir").mkdir()
    (tmp / "afile").write_text("a file, not a folder\n")
    (tmp / "notes.txt").write_text("CASE = 'not python'\n")
    if row.layout == "flat":
        case = tmp / "user_case.py"
        cwd = tmp
    elif row.layout in ("package", "namespace"):
        cwd = tmp / "project"
        package = cwd / "my_project"
        package.mkdir(parents=True)
        if row.layout == "package":
            (package / "__init__.py").write_text("")
        case = package / "hybrid_case.py"
    elif row.layout == "sibling":  # run from a folder that is not the case's
        case = tmp / "project" / "cases" / "user_case.py"
        cwd = tmp / "elsewhere"
        cwd.mkdir()
    elif row.layout == "sibling-from-project":
        case = tmp / "project" / "cases" / "user_case.py"
        cwd = tmp / "project"
    else:
        raise AssertionError(f"unknown layout {row.layout!r}")
    case.parent.mkdir(parents=True, exist_ok=True)
    case.write_text(source)
    if row.layout.startswith("sibling"):
        (case.parent / "helpers.py").write_text("SCALE = 1.0\n")
    return case, cwd


def _search(pattern: str, text: str) -> bool:
    return re.search(pattern, text, flags=re.IGNORECASE | re.MULTILINE) is not None


def _check_user_line(
    row: CliRow, case: pathlib.Path, source: str, output: str
) -> list[str]:
    """The user's line is named (file and line), and is the first frame shown."""
    assert row.user_line is not None
    number = line_of(source, row.user_line)
    named = rf"{re.escape(case.name)}(\", line |:| line |, line ){number}\b"
    problems = []
    if not _search(named, output):
        problems.append(f"the user's line {case.name}:{number} is not named")
    frames = [f for f in FRAME.findall(output) if not f[0].startswith("<")]
    if frames and pathlib.Path(frames[0][0]).name != case.name:
        problems.append(
            f"the first frame shown is {frames[0][0]}:{frames[0][1]}, not the user's"
        )
    return problems


def check_cli_row(row: CliRow, tmp_path: pathlib.Path) -> None:
    """Runs ``row`` and fails the calling test with every way it misbehaved."""
    case, cwd = _lay_out(row, tmp_path)
    source = case.read_text()
    sentinel = tmp_path / "user-code-ran.txt"
    fields = {"case": str(case), "tmp": str(tmp_path), "dir": str(case.parent)}
    args = ["verify", *(a.format(**fields) for a in row.args)]
    env = {"BADINPUT_SENTINEL": str(sentinel), **row.env}
    if row.script:
        assert pathlib.Path(console_script()).is_file(), "no hybridcheck script"
    result = run_cli(args, cwd=cwd, env=env, script=row.script, limit=row.limit)

    problems = []
    expected = EXIT_CODES[row.expect]
    if result.code is None:
        problems.append(f"did not end within {row.limit:.0f} s")
    elif result.code != expected:
        problems.append(f"exit {result.code}, expected {expected} ({row.expect})")
    budget = row.budget if row.budget is not None else LINE_BUDGET[row.expect]
    if len(result.lines) > budget:
        problems.append(f"{len(result.lines)} lines of output, budget {budget}")
    for pattern in row.names:
        if not _search(pattern, result.output):
            problems.append(f"names nothing matching /{pattern}/")
    for pattern in (*FORBID_ALWAYS, *row.forbid):
        if _search(pattern, result.output):
            problems.append(f"says /{pattern}/")
    ours = [line.strip() for line in result.lines if OUR_FRAME.search(line)]
    if ours:
        problems.append(f"{len(ours)} traceback lines in hybridcheck: {ours[0]}")
    if row.once is not None:
        echo = row.user_line or "\0"
        count = sum(1 for x in result.lines if row.once in x and echo not in x)
        if count > ONCE:
            problems.append(f"{row.once!r} on {count} lines: not shown once")
        if row.user_line is not None:
            number = line_of(source, row.user_line)
            frames = [f for f in FRAME.findall(result.output) if f[1] == str(number)]
            frames = [f for f in frames if pathlib.Path(f[0]).name == case.name]
            if len(frames) > 1:
                problems.append(f"the user's frame is in {len(frames)} tracebacks")
    if row.user_line is not None:
        problems += _check_user_line(row, case, source, result.output)
    if row.untouched and sentinel.exists():
        ran = sorted(set(sentinel.read_text().split()))
        problems.append(f"user code ran before the input was refused: {ran}")
    if problems:
        pytest.fail(f"{row.id}: " + "; ".join(problems) + "\n" + result.excerpt())
