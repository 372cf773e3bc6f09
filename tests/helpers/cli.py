"""The CLI run as a user runs it: a subprocess with pipes, or on a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LOCAL = str(FIXTURES / "workflows" / "local-echo.yml")


def hpc(home, *args, stdin: str | None = None, model: str | None = "echo",
        config: str | None = LOCAL, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "hpc_chat", *args]
    if config:
        argv += ["--config", config]
    if model:
        argv += ["--model", model]
    env = {**os.environ, "HPC_CHAT_HOME": str(home), "COLUMNS": ""}
    env.pop("COLUMNS")
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=env)


def on_terminal(args: list[str], cwd) -> str:
    """Run the CLI with a pseudo-terminal as its stdout and stderr; everything it drew."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "hpc_chat", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0, b"".join(chunks)[-2000:]
    return b"".join(chunks).decode(errors="replace")


