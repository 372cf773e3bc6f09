"""hpc_chat on a two-node Slurm: one worker pool per node in a 2-node pilot block, a 2-node
driver job in allocation mode, a node lost mid-batch, and a node that comes back.

The real embedded model answers (a few short answers); no verdict depends on how fast this
machine is: every wait is for an event (workers connected, a task running on node2, a Slurm
state), with a generous timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from hpc_chat.driver.workflow import ParslChatWorkflow
from tests.helpers.engines import listening_engines
from tests.slurm.conftest import wait_until

from .conftest import HOST, NODE2, PARTITION, kill_node2, node_state, restart_node2, signal_node2

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
BOTH = sorted([HOST, NODE2])
STARTUP_S = 300  # a pilot job to start and both pools to connect: generous on a loaded machine


@pytest.fixture(scope="module")
def fast(fixtures) -> str:
    return str(fixtures / "workflows" / "fast.yml")


@pytest.fixture(scope="module")
def site(fixtures) -> str:
    return str(fixtures / "sites" / "local-slurm-2n.yaml")


def job_nodes(job_id: str) -> str:
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                          text=True)
    fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
    return fields.get("NodeList", "")


def job_state(job_id: str) -> str:
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                          text=True)
    fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
    return fields.get("JobState", "GONE")


def ask(wf, n: int, tokens: int = 8, offset: int = 0):
    return [wf.submit_request(f"Name a colour, number {i}.", agents=["balanced_agent"],
                              options={"max_tokens": tokens, "seed": i})
            for i in range(offset, offset + n)]


def host_of(result: dict) -> str:
    return result["responses"][0]["worker"]["host"]


def registered_hosts(logdir: Path) -> dict[str, str]:
    """{manager id: hostname} from the interchange's log (Parsl's MANAGERS command does not
    give hostnames; the interchange logs each manager's registration with its hostname)."""
    found = {}
    for log in logdir.glob("**/interchange.log"):
        for line in log.read_text(errors="replace").splitlines():
            match = REGISTERED.search(line)
            if match:
                found[match["manager"]] = match["host"]
    return found


REGISTERED = re.compile(r"Registration info for manager b'(?P<manager>\w+)'.*"
                        r"'hostname': '(?P<host>[^']+)'")


def connected_hosts(htex) -> dict[str, str]:
    """{manager id: hostname} of the managers connected now."""
    hosts = registered_hosts(Path(htex.logdir))
    return {m["manager"]: hosts.get(m["manager"], "?") for m in htex.connected_managers()
            if m["active"]}


async def both_pools(wf) -> dict[str, str]:
    """Wait until a worker pool of each node is connected; returns {manager: host}."""
    htex = wf.executor.htex()
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        hosts = await asyncio.to_thread(connected_hosts, htex)
        if sorted(hosts.values()) == BOTH:
            return hosts
        await asyncio.sleep(0.5)
    raise AssertionError(f"no worker pool on both nodes within {STARTUP_S} s: {hosts}")


def test_two_node_pilot_block_runs_one_pool_per_node(site, fast, tmp_path):
    """nodes_per_block: 2 with SrunLauncher: one pilot job on both nodes, one worker pool (one
    manager) per node, and the answers come from both hostnames."""
    async def go():
        wf = ParslChatWorkflow(site=site, history_path=str(tmp_path / "h.db"))
        await wf.initialize(fast)
        try:
            connected = await both_pools(wf)
            # each pool loads its engine as it starts (hpc_chat.worker.pool_start), before
            # any task reaches it
            engines = await asyncio.to_thread(listening_engines, os.environ["HPC_CHAT_HOME"], 2,
                                              run_dir=wf.executor.dfk.run_dir)
            sent = wf.executor.dfk.task_count
            results = await asyncio.gather(*ask(wf, 6))
            stats = await wf.get_parsl_stats()
            nodes = job_nodes(stats["job_ids"][0])
        finally:
            await wf.shutdown()
        return connected, results, stats, nodes, engines, sent

    connected, results, stats, nodes, engines, sent = asyncio.run(go())
    assert sent == 0 and len(engines) == 2 and {e["served"] for e in engines} == {0}
    assert {r["responses"][0]["engine"]["pid"] for r in results} == {e["pid"] for e in engines}
    assert len(connected) == 2  # two managers (pools), one per host
    assert stats["managers"] == 2 and stats["active_workers"] == 2
    assert stats["connected_blocks"] == 1
    assert len(stats["job_ids"]) == 1 and nodes == f"{HOST},{NODE2}"  # one 2-node pilot job
    assert all(r["ok"] for r in results), [r["error"] for r in results]
    assert len(results) == 6 and stats["retried_tasks"] == 0
    assert {r["responses"][0]["worker"]["block"] for r in results} == {"0"}
    # both managers had a free worker when the 6 requests arrived: both nodes answer
    assert sorted({host_of(r) for r in results}) == BOTH
    assert len({(host_of(r), r["responses"][0]["worker"]["pid"]) for r in results}) == 2
    assert stats["lost_hosts"] == {}


def test_two_node_driver_job_in_allocation_mode(site, fast, tmp_path):
    """`sbatch -N 2 jobs/driver.sh`: the driver runs on the job's first node and starts a
    worker pool on each of its nodes with srun; every prompt is answered exactly once."""
    n = 6
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Name a colour, number "
                                                                    f"{i}."}) + "\n"
                               for i in range(n)))
    output, log, summary = tmp_path / "answers.jsonl", tmp_path / "driver.log", \
        tmp_path / "summary.json"
    home = tmp_path / "home"  # this run's own runinfo/ (its interchange.log)
    export = ",".join([
        "ALL", f"HPC_CHAT_HOME={home}", f"HPC_CHAT_SITE={site}", f"HPC_CHAT_INPUT={prompts}",
        f"HPC_CHAT_OUTPUT={output}", "HPC_CHAT_MODE=allocation",
        f"HPC_CHAT_BIN={VENV_BIN / 'hpc-chat'}",
        f"HPC_CHAT_ARGS=--config {fast} --max-tokens 8 --summary-json {summary}"])
    proc = subprocess.run(["sbatch", "--wait", "--parsable", f"--partition={PARTITION}",
                           "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1",
                           f"--output={log}", f"--export={export}",
                           str(REPO / "jobs" / "driver.sh")],
                          capture_output=True, text=True, timeout=600)
    text = log.read_text() if log.exists() else ""
    assert proc.returncode == 0, text or proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    assert job_nodes(job_id) in ("", f"{HOST},{NODE2}")  # "" once Slurm forgot the job
    assert f"on {HOST}, mode allocation, site {site}" in text  # the driver: on the first node
    lines = [json.loads(x) for x in output.read_text().splitlines() if x.strip()]
    assert Counter(x["id"] for x in lines if x["ok"]) == Counter(f"q{i}" for i in range(n))
    assert len(lines) == n
    parsl = json.loads(summary.read_text())["parsl"]
    # the driver's own job, two nodes: a pool on each, both connected until the end
    assert parsl["managers"] == 2 and parsl["lost_hosts"] == {}
    assert sorted(registered_hosts(home / "runinfo").values()) == BOTH
    answered_on = {a["host"] for x in lines for a in x["provenance"]["agents"]}
    assert answered_on <= set(BOTH) and answered_on


def test_losing_a_node_mid_batch_retries_its_requests_on_the_other(site, fast, tmp_path,
                                                                    caplog):
    """node2 dies (every process in its namespace killed) while it runs a request: Slurm
    marks it DOWN, the block lives on on the host's node (--no-kill), Parsl fails node2's
    requests with ManagerLost once its heartbeats stop and retries them there, every request
    is answered exactly once, and the driver reports the lost node."""
    n = 10
    killed: dict = {}

    def kill_while_busy(htex) -> None:
        """Freeze node2 (SIGSTOP) when the interchange says its manager runs a task; if it
        still does once frozen, the task cannot finish: kill everything there."""
        node2 = [m for m, host in connected_hosts(htex).items() if host == NODE2]
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            busy = [m for m in htex.connected_managers() if m["manager"] in node2 and m["tasks"]]
            if busy:
                signal_node2(signal.SIGSTOP)
                frozen = [m for m in htex.connected_managers()
                          if m["manager"] in node2 and m["tasks"]]
                if frozen:
                    killed["tasks"] = frozen[0]["tasks"]
                    killed["pids"] = kill_node2()
                    return
                signal_node2(signal.SIGCONT)  # it finished in between: try again
            time.sleep(0.05)
        raise AssertionError("node2 never ran a request")

    async def go():
        wf = ParslChatWorkflow(site=site, history_path=str(tmp_path / "h.db"))
        await wf.initialize(fast)
        try:
            await both_pools(wf)
            tasks = ask(wf, n, tokens=32)
            await asyncio.to_thread(kill_while_busy, wf.executor.htex())
            results = await asyncio.wait_for(asyncio.gather(*tasks), 600)
            stats = await wf.get_parsl_stats()
            # Slurm notices too: no answer from node2's slurmd for SlurmdTimeout -> DOWN;
            # the block (--no-kill) lives on with the host's node and answers more
            await asyncio.to_thread(wait_until, lambda: node_state(NODE2).startswith("down"),
                                    180, f"{NODE2} to be marked down")
            after = await asyncio.wait_for(asyncio.gather(*ask(wf, 2, offset=n)), 300)
            final = await wf.get_parsl_stats()
            final["hosts"] = sorted(connected_hosts(wf.executor.htex()).values())
            final["state"] = job_state(final["job_ids"][0])  # before shutdown cancels it
        finally:
            await wf.shutdown()
        return results, stats, after, final

    with caplog.at_level(logging.WARNING, logger="hpc_chat"):
        results, stats, after, final = asyncio.run(go())
    assert killed["pids"] and killed["tasks"] >= 1
    assert all(r["ok"] for r in results), [r["error"] for r in results if not r["ok"]]
    assert len(results) == n
    # node2's requests failed with ManagerLost and were answered again on the other node
    assert stats["retried_tasks"] >= killed["tasks"]
    assert list(stats["lost_hosts"]) == [NODE2] and stats["lost_hosts"][NODE2] >= killed["tasks"]
    reports = [r.getMessage() for r in caplog.records if "lost the workers" in r.getMessage()]
    assert len(reports) == 1 and f"node {NODE2}" in reports[0], reports
    # the same block, on the surviving node, after Slurm marked node2 down
    assert all(r["ok"] for r in after) and {host_of(r) for r in after} == {HOST}
    assert final["job_ids"] == stats["job_ids"] and len(final["job_ids"]) == 1
    assert final["state"] == "RUNNING" and final["hosts"] == [HOST]


def test_a_node_that_comes_back_gets_work_in_the_next_block(site, fast, tmp_path):
    """node2 is dead and marked DOWN; a 2-node block waits for it (PENDING). Its slurmd is
    started again (scripts/local-slurm.sh up --nodes 2): the node rejoins, the block starts
    and node2 answers requests again."""
    kill_node2()
    wait_until(lambda: node_state(NODE2).startswith("down"), 180, f"{NODE2} to be marked down")

    async def go():
        wf = ParslChatWorkflow(site=site, history_path=str(tmp_path / "h.db"))
        await wf.initialize(fast)
        try:
            job = await asyncio.to_thread(
                wait_until, lambda: (wf.executor.stats().get("job_ids") or [None])[0], 120,
                "the pilot job to be submitted")
            await asyncio.to_thread(wait_until, lambda: job_state(job) == "PENDING", 60,
                                    "the block to wait for node2")
            await asyncio.to_thread(restart_node2)
            connected = await both_pools(wf)
            results = await asyncio.gather(*ask(wf, 4))
            stats = await wf.get_parsl_stats()
        finally:
            await wf.shutdown()
        return job, connected, results, stats

    job, connected, results, stats = asyncio.run(go())
    assert node_state(NODE2) in ("idle", "mixed", "allocated", "completing")
    assert stats["job_ids"] == [job] and sorted(connected.values()) == BOTH
    assert all(r["ok"] for r in results), [r["error"] for r in results]
    assert sorted({host_of(r) for r in results}) == BOTH
