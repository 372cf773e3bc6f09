"""Faults with real processes on the local site: a worker killed mid-batch, a dead interchange."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter

import pytest

from hpc_chat.driver.workflow import ParslChatWorkflow
from tests.helpers.engines import engine_holds
from tests.helpers.procs import parsl_processes, wait_gone

pytestmark = [pytest.mark.model, pytest.mark.parsl]


def test_worker_killed_mid_batch_every_request_answered_once(fixtures, tmp_path):
    """SIGKILL the worker process that just answered, in the middle of a 20-request batch:
    its in-flight task is lost, retried, and every prompt appears exactly once, answered.
    Each answer takes 2 s (the echo model), so the worker is busy with its next one. The
    node's engine is not the worker's: it goes on serving the other worker and the retry."""
    from hpc_chat.batch.input import read_batch
    from hpc_chat.batch.output import OutputWriter
    from hpc_chat.batch.run import answer_with_workflow

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Say something short about the number {i}.\n"
                               for i in range(20)))
    out = tmp_path / "out.jsonl"
    killed = []

    class KillingWriter(OutputWriter):
        def write(self, item, result, *, finished_at):
            line = super().write(item, result, finished_at=finished_at)
            if self.written == 5:
                pid = result["responses"][0]["worker"]["pid"]
                # The queue is full, so this worker takes its next task: the kill waits until
                # the engine holds a request of each worker (this one's included), then lands
                # in the middle of that answer (2 s), however long the pick-up took.
                engine_holds(pid, 2)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            return line

    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"),
                               model="echo?tokens=10&token_s=0.2")
        await wf.initialize(str(fixtures / "workflows" / "fast.yml"))
        writer = KillingWriter(out, resume=False)
        try:
            failed = await answer_with_workflow(wf, read_batch(prompts), writer, agents=None,
                                      options={"max_tokens": 16})
            return failed, await wf.get_parsl_stats()
        finally:
            writer.close()
            await wf.shutdown()

    failed, stats = asyncio.run(asyncio.wait_for(go(), 300))
    assert killed, "no worker was killed"
    assert failed == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 20
    answered = Counter(x["id"] for x in lines if x["ok"])
    assert sorted(answered) == list(range(1, 21)) and set(answered.values()) == {1}
    assert stats["retried_tasks"] >= 1
    assert len({x["provenance"]["agents"][0]["worker"]["pid"] for x in lines}) >= 2
    engines = {x["provenance"]["agents"][0]["engine"]["pid"] for x in lines}
    assert len(engines) == 1, f"the engine should have survived the worker: {engines}"


def test_shutdown_ends_even_when_the_interchange_died(fixtures, tmp_path):
    before = parsl_processes()

    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"))
        await wf.initialize(str(fixtures / "workflows" / "fast.yml"))
        await wf.process_user_input("Hello")
        htex = wf.executor.htex()
        htex.interchange_proc.kill()  # as if it crashed
        htex.interchange_proc.wait()
        started = time.monotonic()
        await wf.executor.shutdown(timeout=5)
        return time.monotonic() - started

    elapsed = asyncio.run(go())
    assert elapsed < 30
    assert wait_gone(parsl_processes() - before, timeout=30) == set()
