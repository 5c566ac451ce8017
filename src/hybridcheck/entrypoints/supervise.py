"""The supervised run: ``hybridcheck verify`` runs the verifier in a worker process
and turns every way that worker can end into a verdict, so user code can never make
the gate pass.

The worker (``python -m hybridcheck.entrypoints.worker``) writes JSON lines to a
status file: the targets it loads, how many cases and their budget, each progress
line, and last ``{"event": "done", "exit": code}``. A worker that ends without that
line (``os._exit`` outside the guarded run, a segfault, an out-of-memory kill) is an
abort (exit 4) naming what it was doing and, from ``faulthandler``'s dump, the
user's frame; one still running long after every case's budget is stopped (exit 5).
Its stdout and stderr are relayed line by line.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from hybridcheck.describe.usercode import is_user_frame
from hybridcheck.report.results import CaseReport, Report

__all__ = ["FAULT_ENV", "GRACE", "STATUS_ENV", "run"]

STATUS_ENV = "HYBRIDCHECK_STATUS_FILE"
FAULT_ENV = "HYBRIDCHECK_FAULT_FILE"
GRACE = 120.0
"""Seconds past every case's budget before a worker is taken for stuck."""
_SIGNALS = {
    signal.SIGSEGV: "crashed (SIGSEGV: a segfault in native code)",
    signal.SIGKILL: "was killed (SIGKILL: the out-of-memory killer, or kill -9)",
    signal.SIGABRT: "aborted (SIGABRT: a native library gave up)",
    signal.SIGBUS: "crashed (SIGBUS)",
    signal.SIGFPE: "crashed (SIGFPE)",
    signal.SIGTERM: "was terminated (SIGTERM)",
}


def _relay(stream: IO[bytes], out: Any) -> None:
    for line in iter(stream.readline, b""):
        out.write(line.decode(errors="replace"))
        out.flush()


def _events(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


@contextlib.contextmanager
def _forwarding(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Ctrl-C and SIGTERM reach the worker (in its own session) once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _doing(events: list[dict[str, Any]]) -> str:
    running = next((e for e in reversed(events) if e.get("event") == "running"), None)
    case = next((e for e in reversed(events) if e.get("event") == "progress"), None)
    last_call = next((e for e in reversed(events) if e.get("event") == "call"), None)
    if last_call is not None and last_call["in"]:  # it never returned
        return (
            f"while the user's {last_call['where']} ran (case {last_call['case']!r}"
            + (f", {running['invariant']}" if running else "")
            + ")"
        )
    if running is not None and case is not None:
        call = f", the user's {running['call']} running" if running["call"] else ""
        return (
            f"while verifying case {case['line'].split(':')[0]!r} ("
            f"{running['invariant']}{call})"
        )
    for event in reversed(events):
        if event.get("event") == "progress":
            return f"while verifying case {event['line'].split(':')[0]!r}"
        if event.get("event") == "loaded":
            return "after loading the cases, before the first one ran"
        if event.get("event") == "import":
            return f"while loading {event['target']}"
    return "while starting"


def _user_frames(fault: pathlib.Path) -> list[str]:
    if not fault.exists():
        return []
    frames = []
    for line in fault.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith('File "') and " line " in line:
            filename = line.split('"')[1]
            if is_user_frame(filename):
                frames.append(
                    f"{os.path.basename(filename)}:{line.rsplit(' line ', 1)[1]}"
                )
    return frames


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("jax", "flax"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "?"
    return found


def _report(
    args: Any,
    code: int | None,
    events: list[dict[str, Any]],
    fault: pathlib.Path,
    stuck: float,
) -> Report:
    doing = _doing(events)
    frames = _user_frames(fault)
    where = f"; user code on the stack: {', '.join(frames[:3])}" if frames else ""
    if stuck:
        text = (
            f"still running {stuck:.0f} s after start, past every case's --timeout, "
            f"{doing}: a step stuck inside compiled code (an endless lax.while_loop, "
            f"a collective waiting for a device){where}; the worker was stopped"
        )
        return Report(
            [CaseReport("(run)", [], timed_out=text)], args.profile, _versions()
        )
    if code is not None and code < 0:
        how = _SIGNALS.get(signal.Signals(-code), f"died of signal {-code}")
    else:
        how = (
            f"exited with code {code} without a verdict (os._exit or sys.exit "
            "outside the run, or the interpreter shut down)"
        )
    text = (
        f"the worker process {how} {doing}{where}. No verdict was reached, so this "
        "is not a pass; rerun with --debug for the full stack"
    )
    return Report([], args.profile, _versions(), aborted=text)


def _write(args: Any, report: Report) -> None:
    for flag, text in (
        ("json", report.to_json),
        ("junit", report.to_junit),
        ("markdown", report.to_markdown),
    ):
        path = getattr(args, flag, None)
        if path:
            with contextlib.suppress(OSError):
                pathlib.Path(path).write_text(text())


def run(argv: list[str], args: Any) -> int:
    """Runs ``hybridcheck verify argv`` in a worker; returns the exit code."""
    from hybridcheck.report.render import headline

    with tempfile.TemporaryDirectory(prefix="hybridcheck-") as tmp:
        status, fault = pathlib.Path(tmp, "status"), pathlib.Path(tmp, "fault")
        env = {**os.environ, STATUS_ENV: str(status), FAULT_ENV: str(fault)}
        with subprocess.Popen(
            [sys.executable, "-m", "hybridcheck.entrypoints.worker", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stderr is not None
            relays = [
                threading.Thread(
                    target=_relay, args=(proc.stdout, sys.stdout), daemon=True
                ),
                threading.Thread(
                    target=_relay, args=(proc.stderr, sys.stderr), daemon=True
                ),
            ]
            for relay in relays:
                relay.start()
            start, deadline, stuck = time.monotonic(), None, 0.0
            with _forwarding(proc):
                while proc.poll() is None:
                    time.sleep(0.2)
                    if deadline is None:
                        loaded = [
                            e for e in _events(status) if e.get("event") == "loaded"
                        ]
                        if loaded and loaded[-1].get("timeout"):
                            seconds = (
                                loaded[-1]["timeout"] * loaded[-1]["cases"] + GRACE
                            )
                            deadline = time.monotonic() + seconds
                    elif time.monotonic() > deadline:
                        stuck = time.monotonic() - start
                        proc.kill()
                        proc.wait()
            for relay in relays:
                relay.join(timeout=5)
        events = _events(status)
        done = [e for e in events if e.get("event") == "done"]
        if done and not stuck:
            if proc.returncode != done[-1]["exit"]:  # after the verdict: teardown
                print(
                    f"hybridcheck: note: the worker ended with code {proc.returncode} "
                    "after writing its verdict (a crash in interpreter teardown); the "
                    "verdict stands",
                    file=sys.stderr,
                )
            return int(done[-1]["exit"])
        report = _report(args, proc.returncode, events, fault, stuck)
    print(headline(report))
    _write(args, report)
    return report.exit_code
