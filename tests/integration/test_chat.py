"""`hpc-chat chat` as a user drives it: commands, a question, and Ctrl-D / Ctrl-C endings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from .procs import parsl_processes, wait_gone

pytestmark = [pytest.mark.model, pytest.mark.parsl]


def default_sigint():
    """A shell starts background jobs with SIGINT ignored, and children inherit that; in a
    terminal it is on. Restore it, so Ctrl-C is tested as a user at a terminal sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def test_ctrl_c_at_the_prompt_ends_cleanly(fast):
    before = parsl_processes()
    proc = chat(fast)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (parsl_processes() - before):
        time.sleep(0.2)
    time.sleep(2)  # Parsl up; the prompt is waiting for input
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "bye" in out
    assert wait_gone(parsl_processes() - before) == set()


def test_logic_imports_no_parsl():
    code = ("import sys, hpc_chat.apps.logic, hpc_chat.agents; "
            "print('parsl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"
