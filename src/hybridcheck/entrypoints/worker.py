"""``python -m hybridcheck.entrypoints.worker ARGS``: one supervised verify run
(see :mod:`hybridcheck.entrypoints.supervise`)."""

from __future__ import annotations

import faulthandler
import os
import sys

from hybridcheck.entrypoints.supervise import FAULT_ENV, STATUS_ENV


def main() -> int:
    fault_path = os.environ.get(FAULT_ENV)
    if fault_path:
        fault = open(fault_path, "w")  # noqa: SIM115 - open for the process's life
        faulthandler.enable(file=fault, all_threads=True)
    from hybridcheck.entrypoints.cli import verify_in_process

    return verify_in_process(sys.argv[1:], status=os.environ.get(STATUS_ENV))


if __name__ == "__main__":
    sys.exit(main())
