"""Tests against the two-node local Slurm (``scripts/local-slurm.sh up --nodes 2``).

node2 is a slurmd named ``<host>-node2`` in the network namespace ``hpc_chat-node2``; both nodes
are in partition ``multi`` (``debug`` stays the host's node alone). The tests skip with the reason
when that setup is not up, except that HPC_CHAT_REQUIRE_SLURM=1 (set by .ci/run, which brings
up both nodes) turns the skip into a failure. Killing and restarting node2 needs root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.slurm.conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local-slurm.sh"
NS = "hpc_chat-node2"
HOST = socket.gethostname().split(".")[0]
NODE2 = f"{HOST}-node2"
PARTITION = "multi"
USABLE = ("idle", "mixed", "allocated", "completing")


def node_state(node: str) -> str:
    proc = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True,
                          text=True)
    states = proc.stdout.split()
    return states[0] if states else "UNKNOWN"


def multinode_problem() -> str | None:
    if not shutil.which("sinfo"):
        return "Slurm is not installed (scripts/local-slurm.sh up --nodes 2 installs it as root)"
    proc = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-N", "-o", "%N %T"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return f"Slurm is not running (scripts/local-slurm.sh up --nodes 2): {proc.stderr.strip()}"
    if not proc.stdout.strip():
        return (f"no partition {PARTITION!r} with node {NODE2}: the 2-node setup is not up "
                f"(scripts/local-slurm.sh up --nodes 2)")
    if os.geteuid() != 0:
        return "the multinode tests kill and restart node2's namespace, which needs root"
    for _ in range(30):  # a node may be briefly in a transient state between jobs
        states = dict(line.split() for line in subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-N", "-o", "%N %T"], capture_output=True,
            text=True).stdout.splitlines() if line.strip())
        if all(states.get(n, "").startswith(USABLE) for n in (HOST, NODE2)):
            return None
        time.sleep(1)
    return f"the nodes of partition {PARTITION} are not usable: {states}"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.multinode)
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(autouse=True)
def two_nodes():
    """Both nodes usable before each test; node2 brought back after one that killed it."""
    skip_or_fail(multinode_problem())
    yield
    if not node_state(NODE2).startswith(USABLE) or not ns_pids():
        restart_node2()


def ns_pids() -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", NS], capture_output=True, text=True)
    return [int(p) for p in proc.stdout.split()]


def signal_node2(sig: int) -> list[int]:
    """Send ``sig`` to every process in node2's network namespace (its slurmd, slurmstepds,
    worker pools and workers); returns their pids."""
    pids = ns_pids()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def kill_node2() -> list[int]:
    """node2 dies: SIGKILL to everything in its namespace, until nothing is left."""
    killed = []
    for _ in range(50):
        pids = signal_node2(signal.SIGKILL)
        if not pids:
            return killed
        killed += pids
        time.sleep(0.1)
    raise AssertionError(f"processes in {NS} survive SIGKILL: {ns_pids()}")


def restart_node2() -> None:
    """What an admin does: the script starts node2's slurmd again (and only that)."""
    proc = subprocess.run([str(SCRIPT), "up", "--nodes", "2"], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
