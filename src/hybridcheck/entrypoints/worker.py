"""``python -m hybridcheck.entrypoints.worker ARGS``: one supervised verify run
(see :mod:`hybridcheck.entrypoints.supervise`)."""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
import traceback

from hybridcheck.entrypoints.supervise import FAULT_ENV, STATUS_ENV


def _report_progress(status: str) -> None:
    """Every half second, what is running (an invariant, a user call), if it
    changed: what the supervisor names if this process is killed (no Python code
    runs on SIGKILL)."""
    from hybridcheck.describe.usercode import active_call
    from hybridcheck.engine.search import NOW

    last = None
    while True:
        time.sleep(0.5)
        call = active_call()
        now = (NOW["invariant"], call[1] if call else "")
        if now != last and now[0]:
            with open(status, "a") as f:
                f.write(
                    json.dumps(
                        {"event": "running", "invariant": now[0], "call": now[1]}
                    )
                    + "\n"
                )
            last = now


def main() -> int:
    fault_path = os.environ.get(FAULT_ENV)
    if fault_path:
        fault = open(fault_path, "w")  # noqa: SIM115 - open for the process's life
        faulthandler.enable(file=fault, all_threads=True)
    status = os.environ.get(STATUS_ENV)
    if status:
        threading.Thread(target=_report_progress, args=(status,), daemon=True).start()
        from hybridcheck.describe import usercode

        def observe(case: str, where: str, entering: bool) -> None:
            event = {"event": "call", "case": case, "where": where, "in": entering}
            with open(status, "a") as f:
                f.write(json.dumps(event) + "\n")

        usercode.ON_CALL.append(observe)
    from hybridcheck.entrypoints.cli import verify_in_process

    try:
        return verify_in_process(sys.argv[1:], status=status)
    except ImportError as exc:  # JAX or Flax broken here: the environment's fault
        print(
            f"hybridcheck verify: error: JAX/Flax do not import here: "
            f"{type(exc).__name__}: {exc} (pin jax, jaxlib and flax together: see "
            "the README's Compatibility)",
            file=sys.stderr,
        )
        _done(status, 2)
        return 2
    except Exception as exc:  # noqa: BLE001 - a hybridcheck bug, said as one
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(
            f"hybridcheck: internal error (a hybridcheck bug, please report it with "
            f"this line): {type(exc).__name__}: {exc} at "
            f"{os.path.basename(where.filename)}:{where.lineno} in {where.name}",
            file=sys.stderr,
        )
        if "--debug" in sys.argv:
            traceback.print_exc()
        _done(status, 1)
        return 1


def _done(status: str | None, code: int) -> None:
    if status:
        with open(status, "a") as f:
            f.write(json.dumps({"event": "done", "exit": code}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
