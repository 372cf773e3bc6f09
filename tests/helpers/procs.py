"""Find Parsl's helper processes (interchange, worker pools) by scanning /proc."""

from __future__ import annotations

import os
import time
from pathlib import Path

# The interchange renames itself with setproctitle; older Parsl showed interchange.py.
MARKERS = ("process_worker_pool", "interchange.py", "parsl: HTEX interchange",
           "hpc_chat.worker.node_engine")


def parsl_processes() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(m in cmdline for m in MARKERS) and int(entry.name) != os.getpid():
            found.add(int(entry.name))
    return found


def wait_gone(pids: set[int], timeout: float = 20.0) -> set[int]:
    """The pids still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive &= parsl_processes()
        if alive:
            time.sleep(0.2)
    return alive


def processes_of_home(home, extra: tuple[int, ...] = ()) -> dict[int, str]:
    """Every live process started with ``HPC_CHAT_HOME=home`` (a driver, its worker pools and
    workers, its watchdog: they inherit it), and the ``extra`` pids, as pid -> command line.

    The interchange renames itself (``parsl: HTEX interchange``) with setproctitle, which
    overwrites its environment as /proc shows it: pass its pid (from the run's ledger) in
    ``extra``. A test's own home makes the search exact."""
    marker = f"HPC_CHAT_HOME={home}".encode() + b"\0"
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes() + b"\0" and \
                    int(entry.name) not in extra:
                continue
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if state != "Z":
            found[int(entry.name)] = cmdline.strip()
    return found


def wait_until_none_of_home(home, timeout: float, extra: tuple[int, ...] = ()
                            ) -> dict[int, str]:
    """What is still running of ``home`` (and ``extra``) after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = processes_of_home(home, extra)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_of_home(home, extra)
    return left
