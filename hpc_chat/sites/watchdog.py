"""The driver's watchdog: when the driver dies, cancel what it started.

Parsl's interchange and worker pools do not end with the process that started them: after a
``kill -9`` of the driver (or the OOM killer, or a dropped login session) they keep running, and
pilot jobs keep their allocation until the walltime. The driver starts this small process in a
session of its own (so a hangup of the terminal does not reach it); it checks every second that
its parent is still the driver. When the driver is gone, it cancels everything the driver's
ledger lists (:mod:`hpc_chat.sites.ledger`) and removes the ledger. When the driver ends
normally it removes the ledger itself, and the watchdog exits.

Run as ``python -m hpc_chat.sites.watchdog LEDGER DRIVER_PID``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 1.0


def start(ledger: Path) -> subprocess.Popen:
    """Start the watchdog of this process (the driver)."""
    return subprocess.Popen(
        [sys.executable, "-m", "hpc_chat.sites.watchdog", str(ledger), str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True)


def watch(ledger: Path, driver_pid: int) -> int:
    from hpc_chat.sites.ledger import LedgerEntry

    while os.getppid() == driver_pid:
        if not ledger.exists():
            return 0  # the driver shut down normally
        time.sleep(POLL_S)
    if not ledger.exists():
        return 0
    try:
        entry = LedgerEntry.read(ledger)
    except (OSError, ValueError, TypeError):
        return 1  # `hpc-chat cleanup` reports an unreadable ledger
    _, stopped = entry.cancel_leftovers()
    if stopped:  # else the record stays for `hpc-chat cleanup` and the next run
        entry.remove()
    return 0


if __name__ == "__main__":  # ps shows: python -m hpc_chat.sites.watchdog LEDGER DRIVER_PID
    sys.exit(watch(Path(sys.argv[1]), int(sys.argv[2])))
