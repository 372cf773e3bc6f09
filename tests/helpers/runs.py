"""A batch run started for a test that kills things, and the ledger of what it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.procs import processes_of_home

LEFTOVER_LIMIT_S = 120  # the bound; the watchdog takes a few seconds


def start_batch(tmp_path: Path, fixtures: Path, home: Path, *, site: str | None = None,
                extra=()) -> tuple[subprocess.Popen, Path]:
    """A batch of 20 answers of 10 s each (echo) on 2 workers: busy for 100 s."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"word {i}"}) + "\n"
                               for i in range(20)))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "hpc_chat", "batch", str(prompts), "-o", str(out),
           "--config", str(fixtures / "workflows" / "fast.yml"),
           "--model", "echo?tokens=50&token_s=0.2", *(["--site", site] if site else []),
           *extra]
    env = {**os.environ, "HPC_CHAT_HOME": str(home)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    return proc, out


def ledger(home: Path) -> dict:
    files = list((home / "runs").glob("*.json")) if (home / "runs").is_dir() else []
    return json.loads(files[0].read_text()) if files else {}


def wait_for_running_workers(home: Path, timeout: float = 120) -> dict:
    """Until the ledger lists the interchange and a block, and a worker pool runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = ledger(home)
        pools = [c for c in processes_of_home(home).values() if "process_worker_pool" in c]
        if entry.get("interchange_pid") and entry.get("jobs") and pools:
            return entry
        time.sleep(0.5)
    raise AssertionError(f"no running workers in {home} after {timeout} s")


