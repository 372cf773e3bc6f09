"""Tests against the real local Slurm (scripts/local-slurm.sh up).

They skip with the reason when no Slurm is up, except that HPC_CHAT_REQUIRE_SLURM=1 (set by
.ci/run) turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

PBS_EMULATOR = Path(__file__).resolve().parents[1] / "pbs_emulator"


def slurm_problem() -> str | None:
    if not shutil.which("sinfo"):
        return "Slurm is not installed (scripts/local-slurm.sh up installs it as root)"
    states = ""
    for _ in range(30):  # a node may be briefly in a transient state between jobs
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            return f"Slurm is not running (scripts/local-slurm.sh up): {proc.stderr.strip()}"
        states = proc.stdout.split()
        if any(s.startswith(USABLE) for s in states):
            return None
        time.sleep(1)
    return f"the Slurm node is not usable: {' '.join(states)}"


USABLE = ("idle", "mixed", "allocated", "completing")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slurm)


def skip_or_fail(problem: str | None) -> None:
    """Skip a test whose scheduler setup is missing, with the reason; with
    HPC_CHAT_REQUIRE_SLURM=1 (CI) fail it instead."""
    if problem:
        if os.environ.get("HPC_CHAT_REQUIRE_SLURM") == "1":
            pytest.fail(f"HPC_CHAT_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


@pytest.fixture(autouse=True)
def slurm():
    skip_or_fail(slurm_problem())


@pytest.fixture
def pbs_path(monkeypatch):
    """Put the PBS emulator's qsub/qstat/qdel first on PATH (for this test only)."""
    if not shutil.which("mpiexec"):
        problem = "mpiexec is not installed (apt-get install mpich)"
        if os.environ.get("HPC_CHAT_REQUIRE_SLURM") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    monkeypatch.setenv("PATH", f"{PBS_EMULATOR}:{os.environ['PATH']}")
    return PBS_EMULATOR


def squeue_ids() -> set[str]:
    proc = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    return set(proc.stdout.split())


def wait_until(predicate, timeout: float, what, interval: float = 0.5):
    """``predicate()``'s first true value, polled; ``what`` (or ``what()``, asked only on a
    timeout) says what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for "
                         f"{what() if callable(what) else what}")


def slurm_state(job_id: str) -> str:
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                          text=True)
    for field in proc.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "GONE"
