"""`hpc-chat ask` on a terminal shows each agent's answer as it is generated, in its own panel;
through a pipe it prints the answer once, whole."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.cli import on_terminal

pytestmark = [pytest.mark.parsl]

ECHO = "echo?tokens=12&token_s=0.25"  # 12 tokens, 3 s an answer: frames in between


def test_ask_on_a_terminal_shows_each_agents_answer_as_it_grows(fixtures, tmp_path):
    drawn = on_terminal(["ask", "--config", str(fixtures / "workflows" / "fast.yml"),
                          "--agents", "creative_agent,balanced_agent", "--model", ECHO,
                          "--max-tokens", "12", "alpha beta"], tmp_path)
    final = " ".join(["alpha beta"] * 6)
    assert f"[creative_agent]\r\n{final}" in drawn and f"[balanced_agent]\r\n{final}" in drawn
    assert "─ creative_agent ─" in drawn and "─ balanced_agent ─" in drawn  # two live panels
    shown = set(re.findall(r"│ ((?:alpha|beta)[a-z ]*?) +│", drawn))
    partial = {text for text in shown if final.startswith(text) and text != final}
    assert len(partial) >= 3, f"no answer was shown while it grew: {shown}"


def test_ask_through_a_pipe_prints_the_answer_once(fixtures, tmp_path):
    done = subprocess.run([sys.executable, "-m", "hpc_chat", "ask", "--config",
                           str(fixtures / "workflows" / "fast.yml"), "--model", ECHO,
                           "--agents", "balanced_agent", "--max-tokens", "12", "alpha beta"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == " ".join(["alpha beta"] * 6) + "\n"
    assert "╭" not in done.stdout + done.stderr
