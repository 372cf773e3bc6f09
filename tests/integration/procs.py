"""Find Parsl's helper processes (interchange, worker pools) by scanning /proc."""

from __future__ import annotations

import os
import time
from pathlib import Path

MARKERS = ("process_worker_pool", "interchange.py")


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
