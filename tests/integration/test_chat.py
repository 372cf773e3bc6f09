"""`hpc-chat chat` as a user drives it: commands, a question, and Ctrl-D / Ctrl-C endings."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.procs import parsl_processes, wait_gone
from tests.helpers.signals import default_sigint

pytestmark = [pytest.mark.model, pytest.mark.parsl]


def chat(fast, *extra):
    return subprocess.Popen([sys.executable, "-m", "hpc_chat", "chat", "--config", fast,
                             "--conversation", "chat-test", *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint)


@pytest.fixture(scope="module")
def fast(fixtures) -> str:
    return str(fixtures / "workflows" / "fast.yml")


def test_commands_a_question_and_ctrl_d(fast):
    before = parsl_processes()
    proc = chat(fast)
    try:
        out, err = proc.communicate(
            "/agents\nExplain why the sea is salty.\n/history\n/stats\n",
            timeout=180)  # then end of input, as Ctrl-D
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "creative_agent" in out and "analytical_agent" in out  # /agents table
    assert out.count("Explain why the sea is salty.") == 1  # echoed once by /history
    assert "analytical_agent" in out.split("Explain why the sea is salty.")[1]
    assert "requests (ok / failed)" in err and "1 / 0" in err  # /stats table
    assert "bye" in out
    assert wait_gone(parsl_processes() - before) == set()


def read_until(stream, marker: str, timeout: float) -> str:
    """Read a pipe line by line until a line contains ``marker``."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    seen, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen += lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if marker in seen:
            return seen
    raise AssertionError(f"no {marker!r} within {timeout} s; saw {seen!r}")


def test_ctrl_c_at_the_prompt_ends_cleanly(fast):
    before = parsl_processes()
    proc = chat(fast)
    try:
        banner = read_until(proc.stdout, "/quit to end.", 180)  # ready: the prompt is next
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        proc.wait(timeout=120)
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert "conversation chat-test" in banner
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert wait_gone(parsl_processes() - before) == set()


def started_interchange(pid: int, timeout: float) -> Path:
    """Wait until the driver ``pid`` is starting Parsl: its interchange has recorded itself
    (``runs/HOST-PID-RUN.interchange``, written before the interchange runs and before any
    worker is started, so the chat cannot be at its prompt yet)."""
    runs = Path(os.environ["HPC_CHAT_HOME"]) / "runs"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(runs.glob(f"{socket.gethostname()}-{pid}-*.interchange"))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"driver {pid} recorded no interchange within {timeout} s")


def test_ctrl_c_while_starting_ends_cleanly(fast):
    """Ctrl-C while Parsl starts is never lost: the start ends, everything it started is
    stopped, and the command ends with 130."""
    before = parsl_processes()
    proc = chat(fast)
    try:
        started_interchange(proc.pid, 120)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err and "Aborted" not in err
    assert wait_gone(parsl_processes() - before) == set()


def test_logic_imports_no_parsl():
    code = ("import sys, hpc_chat.worker.chat, hpc_chat.agents; "
            "print('parsl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"
