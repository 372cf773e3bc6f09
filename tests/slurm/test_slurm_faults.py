"""Faults on the real Slurm: a cancelled pilot job, scheduler hiccups, a failing sbatch,
workers draining before their walltime, and a driver killed by its walltime.

Work that must last a known time uses the built-in ``echo`` model at a set pace (answers x
tokens x seconds per token / workers), so no verdict depends on how fast this machine is."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import parsl.providers.cluster_provider as cluster_provider
import pytest

from hpc_chat.driver.workflow import ParslChatWorkflow

from .conftest import slurm_state, squeue_ids, wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
REAL_EXECUTE_WAIT = cluster_provider.execute_wait


@pytest.fixture(scope="module")
def fast(fixtures) -> str:
    return str(fixtures / "workflows" / "fast.yml")


def echo(tokens: int, token_s: float) -> str:
    """The echo model taking ``tokens * token_s`` seconds per answer."""
    return f"echo?tokens={tokens}&token_s={token_s}"


async def run_batch(wf, n, *, during=None, tokens=24):
    """Submit n requests; call ``during(done_count)`` as they complete; return the results."""
    tasks = [wf.submit_request(f"Tell me fact {i} about oceans.", agents=["balanced_agent"],
                               options={"max_tokens": tokens, "seed": i}) for i in range(n)]
    results = []
    for next_done in asyncio.as_completed(tasks):
        results.append(await next_done)
        if during:
            await during(len(results))
    return results


def test_cancelled_pilot_job_is_replaced_and_the_batch_completes(fast, tmp_path):
    """24 answers of 2 s on 2 workers (24 s of work); the pilot job is cancelled after 3,
    while 2 are in flight: those are retried on a new block."""
    cancelled = []

    async def go():
        wf = ParslChatWorkflow(site="local-slurm", history_path=str(tmp_path / "h.db"),
                               model=echo(10, 0.2))
        await wf.initialize(fast)

        async def cancel_once(done):
            if done == 3 and not cancelled:
                job = (await wf.get_parsl_stats())["job_ids"][0]
                subprocess.run(["scancel", job], check=True)
                cancelled.append(job)

        try:
            results = await run_batch(wf, 24, during=cancel_once)
            stats = await wf.get_parsl_stats()
        finally:
            await wf.shutdown()
        return results, stats

    results, stats = asyncio.run(go())
    assert all(r["ok"] for r in results), [r["error"] for r in results if not r["ok"]]
    assert len(results) == 24
    assert len(stats["job_ids"]) == 2 and cancelled[0] in stats["job_ids"]  # a new block
    assert stats["retried_tasks"] >= 1
    assert slurm_state(cancelled[0]) in ("CANCELLED", "GONE")


def test_squeue_hiccups_do_not_start_extra_pilot_jobs(fast, tmp_path, mocker):
    calls = Counter()

    def flaky(cmd, timeout=None):
        word = cmd.split()[0]
        calls[word] += 1
        if word == "squeue" and calls[word] % 2 == 0:
            return (0, "" if calls[word] % 4 == 0 else "garbage line\n", "")
        return REAL_EXECUTE_WAIT(cmd, timeout)

    mocker.patch.object(cluster_provider, "execute_wait", side_effect=flaky)

    async def go():
        wf = ParslChatWorkflow(site="local-slurm", history_path=str(tmp_path / "h.db"))
        await wf.initialize(fast)
        try:
            results = await run_batch(wf, 10)
            deadline = time.monotonic() + 90
            while calls["squeue"] < 6 and time.monotonic() < deadline:
                await asyncio.sleep(1)  # let the poller meet several hiccups
            return results, await wf.get_parsl_stats()
        finally:
            await wf.shutdown()

    results, stats = asyncio.run(go())
    assert all(r["ok"] for r in results)
    assert calls["squeue"] >= 4, f"the status poller should have run several times: {calls}"
    assert calls["sbatch"] == 1 and len(stats["job_ids"]) == 1


def test_failing_sbatch_fails_requests_with_the_schedulers_message(fast, tmp_path, mocker):
    def refuse(cmd, timeout=None):
        if cmd.startswith("sbatch"):
            return (1, "", "sbatch: error: Batch job submission failed: Invalid account "
                           "or account/partition combination specified")
        return REAL_EXECUTE_WAIT(cmd, timeout)

    mocker.patch.object(cluster_provider, "execute_wait", side_effect=refuse)

    async def go():
        wf = ParslChatWorkflow(site="local-slurm", history_path=str(tmp_path / "h.db"))
        await wf.initialize(fast)
        try:
            return await asyncio.wait_for(run_batch(wf, 2), 90)
        finally:
            await wf.shutdown()

    started = time.monotonic()
    results = asyncio.run(go())
    assert time.monotonic() - started < 90
    assert not any(r["ok"] for r in results)
    assert all("Invalid account" in r["error"] for r in results), results[0]["error"]


def test_workers_drain_before_the_pilot_walltime(fast, fixtures, tmp_path):
    """One-minute pilot jobs drain after 30 s; a longer batch moves on to a new block.
    40 answers of 3 s on 2 workers: 60 s of work, twice the first block's working time."""
    site = str(fixtures / "sites" / "local-slurm-short.yaml")

    async def go():
        wf = ParslChatWorkflow(site=site, history_path=str(tmp_path / "h.db"),
                               model=echo(20, 0.15))
        await wf.initialize(fast)
        try:
            results = await run_batch(wf, 40, tokens=20)
            return results, await wf.get_parsl_stats()
        finally:
            await wf.shutdown()

    results, stats = asyncio.run(go())
    assert all(r["ok"] for r in results), [r["error"] for r in results if not r["ok"]]
    assert len(stats["job_ids"]) >= 2, "the batch should have outlived the first pilot job"
    for job in stats["job_ids"]:
        assert slurm_state(job) != "TIMEOUT", "a pilot job reached its walltime undrained"


def test_driver_killed_by_its_walltime_then_resubmitted(fast, tmp_path):
    """A one-minute driver job with 90 s of work (60 answers of 3 s on 2 workers) reaches
    its walltime; the resubmitted job finishes the batch."""
    prompts = tmp_path / "prompts.jsonl"
    total = 60
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"Write two sentences about "
                                                              f"the number {i}."}) + "\n"
                               for i in range(total)))
    output = tmp_path / "answers.jsonl"
    export = ",".join(["ALL", "HPC_CHAT_SITE=local-slurm", f"HPC_CHAT_INPUT={prompts}",
                       f"HPC_CHAT_OUTPUT={output}", f"HPC_CHAT_BIN={VENV_BIN / 'hpc-chat'}",
                       f"HPC_CHAT_MODEL={echo(20, 0.15)}",
                       f"HPC_CHAT_ARGS=--config {fast} --max-tokens 48"])
    argv = ["sbatch", "--parsable", "--cpus-per-task=2", f"--output={tmp_path}/%j.log",
            f"--export={export}", str(REPO / "jobs" / "driver.sh")]
    first = subprocess.run(argv[:2] + ["--time=1"] + argv[2:], capture_output=True, text=True,
                           check=True).stdout.strip()
    wait_until(lambda: slurm_state(first) not in ("RUNNING", "PENDING", "COMPLETING"), 240,
               "the walltime to end the first driver job", interval=2)
    assert slurm_state(first) == "TIMEOUT"
    done_first = [json.loads(x) for x in output.read_text().splitlines() if x.strip()]
    assert 0 < len(done_first) < total
    second = subprocess.run(argv[:1] + ["--wait"] + argv[1:], capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stderr
    lines = [json.loads(x) for x in output.read_text().splitlines() if x.strip()]
    answered = Counter(x["id"] for x in lines if x["ok"])
    assert sorted(answered) == list(range(total)) and set(answered.values()) == {1}
    assert first not in squeue_ids()
