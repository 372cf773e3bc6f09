"""Hardening with real processes on the local site: a driver killed alone leaves nothing
running, leftovers of a driver without its watchdog are cleaned up, workers that cannot start
say why, a stalled worker's micro-batch is retried request by request.

Each test that kills something has its own HPC_CHAT_HOME, so what it started is found exactly
(every process of a run inherits that variable) and nothing of another test is touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.helpers.procs import processes_of_home, wait_until_none_of_home
from tests.helpers.runs import LEFTOVER_LIMIT_S, ledger, start_batch, wait_for_running_workers

pytestmark = [pytest.mark.parsl]

def test_a_driver_killed_alone_leaves_nothing_running(tmp_path, fixtures):
    """SIGKILL of the driver's PID only (as the OOM killer does): its watchdog stops the
    interchange and the worker pool, and removes the run's ledger."""
    home = tmp_path / "home"
    proc, _ = start_batch(tmp_path, fixtures, home)
    entry = wait_for_running_workers(home)
    interchange = (entry["interchange_pid"],)
    before = processes_of_home(home, interchange)
    assert "parsl: HTEX interchange" in before[interchange[0]]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    started = time.monotonic()
    left = wait_until_none_of_home(home, LEFTOVER_LIMIT_S, interchange)
    assert left == {}, f"still running {time.monotonic() - started:.0f} s after the kill: {left}"
    assert entry["pid"] == proc.pid and ledger(home) == {}
    # Parsl's own log is kept at INFO: no prompt copied into it
    logs = "".join(p.read_text(errors="replace") for p in (home / "runinfo").rglob("*.log"))
    assert "word 1" not in logs and "parsl.log" in str(list((home / "runinfo").rglob("*")))


def test_cleanup_stops_what_a_driver_without_its_watchdog_left(tmp_path, fixtures):
    """Watchdog and driver both killed (e.g. the whole session): the interchange and worker
    pool keep running until `hpc-chat cleanup` stops them by the ledger."""
    home = tmp_path / "home"
    proc, _ = start_batch(tmp_path, fixtures, home)
    interchange = (wait_for_running_workers(home)["interchange_pid"],)
    watchdogs = [pid for pid, c in processes_of_home(home).items()
                 if "hpc_chat.sites.watchdog" in c]
    assert len(watchdogs) == 1
    os.kill(watchdogs[0], signal.SIGKILL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)
    left = processes_of_home(home, interchange)
    assert any("process_worker_pool" in c for c in left.values()), left  # orphans, as before
    assert interchange[0] in left
    env = {**os.environ, "HPC_CHAT_HOME": str(home)}
    listed = subprocess.run([sys.executable, "-m", "hpc_chat", "cleanup", "--dry-run"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert f"driver {proc.pid} on " in listed.stdout and "is gone" in listed.stdout
    assert processes_of_home(home)  # a dry run stops nothing
    done = subprocess.run([sys.executable, "-m", "hpc_chat", "cleanup"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "stopped the interchange" in done.stdout and "stopped local worker pools" in done.stdout
    assert wait_until_none_of_home(home, 30, interchange) == {}
    again = subprocess.run([sys.executable, "-m", "hpc_chat", "cleanup"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert "nothing to clean up" in again.stdout


def test_workers_that_cannot_start_fail_the_command_with_their_own_output(tmp_path, fixtures):
    """A worker_init that fails (a module missing on the node): `ask` and `batch` end with the
    worker pool's own message instead of waiting for ever; nothing is left running."""
    profile = tmp_path / "local-broken.yaml"
    profile.write_text((fixtures.parent.parent / "site_configs" / "local.yaml").read_text()
                       .replace("name: local", "name: local-broken")
                       .replace("  launcher: {type: SingleNodeLauncher}",
                                "  launcher: {type: SingleNodeLauncher}\n  worker_init: "
                                "\"echo python3.99: module not found >&2; exit 3\""))
    home = tmp_path / "home"
    env = {**os.environ, "HPC_CHAT_HOME": str(home)}
    base = [sys.executable, "-m", "hpc_chat"]
    opts = ["--site", str(profile), "--model", "echo"]
    ask = subprocess.run([*base, "ask", "hi", *opts], env=env, capture_output=True, text=True,
                         timeout=120)
    assert ask.returncode == 2, ask.stdout + ask.stderr
    assert "the worker pool (pid" in ask.stderr and "exited before any worker connected" \
        in ask.stderr
    assert "| python3.99: module not found" in ask.stderr and "Traceback" not in ask.stderr
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    batch = subprocess.run([*base, "batch", str(prompts), "-o", str(tmp_path / "o.jsonl"),
                            *opts], env=env, capture_output=True, text=True, timeout=120)
    assert batch.returncode == 2 and "| python3.99: module not found" in batch.stderr, \
        batch.stderr
    assert wait_until_none_of_home(home, 30) == {}


def engine_holds_for(worker: int, *, served: int, timeout: float = 60) -> None:
    """Wait until this session's node engine has finished ``served`` requests and decodes at
    least one request of the worker process ``worker`` (the engine's status says whose)."""
    from tests.helpers.engines import engine_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = engine_status(worker)
        if status and status["served"] >= served and status["clients"].get(str(worker)):
            return
        time.sleep(0.02)
    raise AssertionError(f"the engine never held a request of worker {worker}")


def test_a_stalled_worker_has_its_micro_batch_retried_request_by_request(fixtures, tmp_path):
    """A worker stopped (SIGSTOP) for 3x the time limit in the middle of a micro-batch of 4:
    the batch times out, each of its requests is sent again on its own within its own limit,
    and every request is answered exactly once."""
    import asyncio

    from hpc_chat.batch.input import read_batch
    from hpc_chat.batch.output import OutputWriter
    from hpc_chat.batch.run import answer_with_workflow
    from hpc_chat.driver.workflow import ParslChatWorkflow

    cfg = (fixtures / "workflows" / "fast.yml").read_text()
    cfg = cfg.replace("batch_size: 1 ", "batch_size: 4 ").replace(
        "timeout_seconds: 60", "timeout_seconds: 4")
    config = tmp_path / "batched-4s.yml"
    config.write_text(cfg)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(16)))
    out = tmp_path / "out.jsonl"
    stalled = []

    class StallingWriter(OutputWriter):
        def write(self, item, result, *, finished_at):
            line = super().write(item, result, finished_at=finished_at)
            if self.written == 1:  # that worker takes its next micro-batch (answers of 2 s)
                pid = result["responses"][0]["worker"]["pid"]
                # Stopped once the engine has finished both first micro-batches (8) and holds
                # requests of this worker: they are its next micro-batch, 2 s from done.
                engine_holds_for(pid, served=8)
                os.kill(pid, signal.SIGSTOP)
                stalled.append(pid)
                time.sleep(12)  # 3x the 4 s limit
                os.kill(pid, signal.SIGCONT)
            return line

    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"),
                               model="echo?tokens=20&token_s=0.1")
        await wf.initialize(str(config))
        writer = StallingWriter(out, resume=False)
        try:
            failed = await answer_with_workflow(wf, read_batch(prompts), writer,
                                                agents=["balanced_agent"])
            return failed, wf.batcher.requests_split
        finally:
            writer.close()
            await wf.shutdown()

    failed, split = asyncio.run(asyncio.wait_for(go(), 300))
    assert stalled, "no worker was stopped"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert failed == 0, [x["error"] for x in lines if not x["ok"]]
    answered = Counter(x["id"] for x in lines if x["ok"])
    assert sorted(answered) == list(range(1, 17)) and set(answered.values()) == {1}
    assert split >= 1  # the stalled micro-batch was resent request by request
