"""Running ``hybridcheck`` as a user does, and reading what it printed."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import hybridcheck as hc

# hybridcheck's own source folder, wherever it is installed (src/ checkout or
# site-packages): a traceback line in it is one of our frames.
PACKAGE_DIR = pathlib.Path(hc.__file__).resolve().parent
OUR_FRAME = re.compile(
    r'File "(?:[^"]*[/\\])?hybridcheck[/\\][^"]*"|File "' + re.escape(str(PACKAGE_DIR))
)
FRAME = re.compile(r'File "([^"]+)", line (\d+)')


@dataclasses.dataclass
class Result:
    """One CLI run: exit code, stdout and stderr interleaved, wall seconds."""

    code: int | None  # None: it did not end within the row's limit
    output: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()

    def excerpt(self, limit: int = 40) -> str:
        shown = self.lines[:limit]
        more = len(self.lines) - len(shown)
        tail = [f"... ({more} more lines)"] if more > 0 else []
        return "\n".join(["----- output -----", *shown, *tail, "------------------"])


def console_script() -> str:
    """The ``hybridcheck`` console script of the interpreter running the tests."""
    return str(pathlib.Path(sys.executable).with_name("hybridcheck"))


def run_cli(
    args: list[str],
    *,
    cwd: pathlib.Path,
    env: dict[str, str] | None = None,
    script: bool = False,
    limit: float = 150.0,
) -> Result:
    """Runs ``python -m hybridcheck ARGS`` (or the console script) in ``cwd``."""
    command = [console_script()] if script else [sys.executable, "-m", "hybridcheck"]
    full_env = {**os.environ, **(env or {})}
    # The user's shell, not the test process: no Hypothesis profile of ours, and
    # nothing on sys.path but what the user's own command line gives.
    full_env.pop("HYPOTHESIS_PROFILE", None)
    full_env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    # A session of its own, so a worker process the product may start is ended
    # with it when the row's limit passes (a hanging user step sleeps for minutes).
    proc = subprocess.Popen(
        [*command, *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return Result(None, out or "", time.perf_counter() - start)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind by the run
    return Result(proc.returncode, out, time.perf_counter() - start)
