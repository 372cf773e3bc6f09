"""Asking a node engine what it holds: its status over its socket, found from a worker."""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Client
from pathlib import Path

from hpc_chat.protocol.engine import EngineStatus, Op, Order, encode
from tests.helpers.procs import processes_of_home


def status_at(sock) -> dict:
    with Client(str(sock), family="AF_UNIX") as conn:
        conn.send_bytes(encode(Order(op=Op.STATUS)))
        return EngineStatus.model_validate_json(conn.recv_bytes()).model_dump()


def engine_status(worker: int, home=None) -> dict | None:
    """The status of the node engine that the Parsl worker process ``worker`` uses (the one
    of its pool's manager; processes of ``home``, default this session's), None while none
    listens."""
    try:
        manager = (Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split())[1]
    except (OSError, IndexError):
        return None
    for cmdline in processes_of_home(home or os.environ["HPC_CHAT_HOME"]).values():
        if "hpc_chat.worker.node_engine" in cmdline and \
                cmdline.endswith(f"--manager {manager}"):
            try:
                return status_at(cmdline.split("--socket ")[1].split()[0])
            except OSError:
                pass  # still loading
    return None


def engine_holds(worker: int, requests: int, timeout: float = 60, home=None) -> None:
    """Wait until ``worker``'s node engine is decoding ``requests`` requests at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = engine_status(worker, home)
        if status and status["in_flight"] >= requests:
            return
        time.sleep(0.02)
    raise AssertionError(f"the engine never held {requests} requests at once")




def listening_engines(home: str, count: int, timeout: float = 120,
                      run_dir: str | None = None, manager: int | None = None) -> list[dict]:
    """The statuses of the node engines of ``home`` that answer on their sockets (only those
    of the worker pools of the Parsl run in ``run_dir``, or of the pool ``manager``, when
    given: an earlier test's engine may not have ended yet), waited for until ``count`` do
    (``timeout`` only bounds a failure)."""
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        found = []
        running = processes_of_home(home)
        pools = {pid for pid, cmd in running.items() if "process_worker_pool" in cmd
                 and (run_dir is None or f"{run_dir.rstrip('/')}/" in cmd)}
        if manager is not None:
            pools = {manager}
        for cmdline in running.values():
            if "hpc_chat.worker.node_engine" in cmdline and (
                    (run_dir is None and manager is None) or
                    int(cmdline.rsplit(" ", 1)[-1]) in pools):
                try:
                    found.append(status_at(cmdline.split("--socket ")[1].split()[0]))
                except OSError:
                    pass  # still loading
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{len(found)} node engines listened, not {count}")
