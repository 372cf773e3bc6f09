"""The launch line's background start of the node engines, run by a real shell as Parsl's
launchers run it: the shell ``exec``\\ s the pool and keeps its pid, so the engine is bound to
the pool's manager; when the ``exec`` fails, nothing is started (the whole Parsl path runs in
tests/integration/test_node_engine.py and tests/multinode)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_chat.protocol.context import SiteModel
from hpc_chat.protocol.engine import AgentModel, PoolStart
from hpc_chat.sites.build import POOL_START
from hpc_chat.worker.node_engine import process_start
from tests.helpers.engines import listening_engines
from tests.helpers.procs import processes_of_home

BIN = str(Path(sys.executable).parent / POOL_START)
PLAN = PoolStart(model=SiteModel(override="echo?tokens=2"), agents=[AgentModel()]).to_arg()


def _launch(tmp_path, shell: str, pool: str) -> subprocess.Popen:
    """The launch line as :func:`hpc_chat.sites.build.start_engines_with_pool` writes it, with
    ``pool`` in place of ``process_worker_pool.py ...``, run by ``shell``."""
    line = (f"{BIN} {shlex.quote(PLAN)} --logdir={tmp_path / 'logs'} "
            f"</dev/null >/dev/null 2>&1 & exec {pool}")
    return subprocess.Popen([shell, "-c", line])


def _log(tmp_path, says: str, timeout: float = 120) -> str:
    """The background start's log (named after its parent: the pool, or what it was left
    to), once it says ``says``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = "".join(p.read_text() for p in (tmp_path / "logs").glob("pool_start-*.log"))
        if says in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"the pool start's log never said {says!r}")


@pytest.mark.parametrize("shell", ["bash", "sh"])  # srun's and mpiexec's launchers
def test_the_engine_is_bound_to_the_pool_the_shell_became_and_ends_with_it(tmp_path, shell):
    # a stand-in pool: its command line names process_worker_pool, as Parsl's own does
    pool = _launch(tmp_path, shell, "python3 -c 'import time; time.sleep(600)' "
                                    "process_worker_pool.py")
    try:
        engines = listening_engines(os.environ["HPC_CHAT_HOME"], 1, manager=pool.pid)
        assert len(engines) == 1
        assert f"-{pool.pid}.log" in " ".join(os.listdir(tmp_path / "logs"))
        _log(tmp_path, "ready")
    finally:
        pool.kill()
        pool.wait()
    deadline = time.monotonic() + 60  # the engine ends within a second of its manager
    while process_start(engines[0]["pid"]) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_start(engines[0]["pid"]) is None


def test_a_shell_that_does_not_become_the_pool_starts_no_engine(tmp_path):
    """``exec`` fails (no such pool on PATH): the shell exits, the background start is left to
    init, sees that its parent never ran the pool, and starts nothing."""
    shell = _launch(tmp_path, "bash", "/nonexistent/process_worker_pool.py")
    assert shell.wait(timeout=60) != 0
    text = _log(tmp_path, "did not become a worker pool")
    assert "ready" not in text
    mine = f"--logdir={tmp_path / 'logs'}"
    deadline = time.monotonic() + 60  # it exits just after its last log line
    while time.monotonic() < deadline and [
            cmd for cmd in processes_of_home(os.environ["HPC_CHAT_HOME"]).values()
            if mine in cmd]:
        time.sleep(0.05)
    left = processes_of_home(os.environ["HPC_CHAT_HOME"]).values()
    assert not [cmd for cmd in left if mine in cmd]
    assert not [cmd for cmd in left if "hpc_chat.worker.node_engine" in cmd and (
        cmd.endswith(f"--manager {shell.pid}") or cmd.endswith("--manager 1"))]
