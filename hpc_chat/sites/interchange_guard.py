"""Parsl's interchange, recorded in the run's ledger before it runs a line of its own.

The driver learns the interchange's PID only when Parsl's start returns, seconds after the
process began. A driver killed in between (a ``kill -9`` while ``initialize`` runs, a Python
session closed during start-up) used to leave an interchange that nothing knew of and that never
exits by itself. So the HTEX's ``interchange_launch_cmd`` (a documented Parsl parameter) is this
module in front of Parsl's own command. It writes its PID and process start time beside the
driver's ledger (``runs/HOST-PID-RUN.interchange``), then checks that the driver is still its
parent, then execs the interchange (same PID, same start time, the same stdin with Parsl's
configuration). Either the driver was alive after the record was written, and its watchdog or
``hpc-chat cleanup`` finds the record when it dies, or it was already gone, and the interchange
is never started. Nothing is left to timing.

Run as ``python -m hpc_chat.sites.interchange_guard RECORD DRIVER_PID -- COMMAND...``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hpc_chat.sites.ledger import process_start


def guarded(command: list[str], record: Path, driver_pid: int) -> list[str]:
    """The launch command that records the interchange at ``record`` before it runs."""
    return [sys.executable, "-m", "hpc_chat.sites.interchange_guard", str(record),
            str(driver_pid), "--", *command]


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m hpc_chat.sites.interchange_guard RECORD DRIVER_PID -- "
              "COMMAND...", file=sys.stderr)
        return 2
    record, driver_pid, command = Path(argv[0]), int(argv[1]), argv[3:]
    pid = os.getpid()
    data = json.dumps({"pid": pid, "start": process_start(pid)})
    # Created new and private beside the ledger (0700): never through a planted file.
    tmp = record.with_name(f"{record.name}.{pid}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(data)
    os.replace(tmp, record)
    if os.getppid() != driver_pid:  # the driver died before the record could be seen
        record.unlink(missing_ok=True)
        return 1
    os.execvp(command[0], command)
    return 127  # not reached: execvp raises when it fails


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
