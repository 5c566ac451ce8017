"""``python -m hybridcheck.entrypoints.worker ARGS``: one supervised verify run
(see :mod:`hybridcheck.entrypoints.supervise`)."""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import traceback

from hybridcheck.entrypoints.supervise import FAULT_ENV, STATUS_ENV


def main() -> int:
    fault_path = os.environ.get(FAULT_ENV)
    if fault_path:
        fault = open(fault_path, "w")  # noqa: SIM115 - open for the process's life
        faulthandler.enable(file=fault, all_threads=True)
    status = os.environ.get(STATUS_ENV)
    from hybridcheck.entrypoints.cli import verify_in_process

    try:
        return verify_in_process(sys.argv[1:], status=status)
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
        if status:
            with open(status, "a") as f:
                f.write(json.dumps({"event": "done", "exit": 1}) + "\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
