"""``hpc-chat sites test NAME``: a site profile tried end to end before any model is staged.

A few requests to the built-in ``echo`` model go through the real scheduler, the real pilot job
and the real workers, and each stage is reported as it is reached: the pilot job submitted, its
scheduler state (``PENDING (Priority)``, ``RUNNING``), workers connected, answers (with the host
that gave them). What fails is named with the stage it failed at, so an admin knows whether to
look at the profile, the scheduler, the network between compute and login nodes, or the
environment on the compute nodes.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hpc_chat.sites.schedulers import job_ended
from hpc_chat.sites.submit import pilot_state

DEFAULT_MODEL = "echo?tokens=8"
POLL_S = 1.0


async def check_site(site: str, *, report: Callable[[str, str], None], requests: int = 3,
                     timeout: float = 600.0, model: str = DEFAULT_MODEL,
                     config: str | None = None) -> bool:
    """Run ``requests`` echo requests on ``site``; ``report(stage, detail)`` is called as each
    stage is reached. True when every request was answered within ``timeout`` seconds."""
    from hpc_chat.workflow import ParslChatWorkflow

    start = time.monotonic()
    deadline = start + timeout

    def stage(name: str, detail: str) -> None:
        report(name, f"{detail} [{time.monotonic() - start:.1f} s]")

    with tempfile.TemporaryDirectory(prefix="hpc_chat_site_test_") as tmp:
        wf = ParslChatWorkflow(site=site, model=model, history_path=str(Path(tmp) / "h.db"))
        await wf.initialize(config)
        try:
            scheduler = wf.profile.scheduler
            stage("profile", f"{wf.profile.name} ({scheduler}, {wf.profile.launcher}) from "
                             f"{wf.profile.source}; model {model}")
            ok = await _follow(wf, scheduler, deadline, stage)
            if not ok:
                return False
            agent = next(iter(wf.agents))
            tasks = [wf.submit_request(f"site test request {i}", agents=[agent])
                     for i in range(requests)]
            answered = 0
            try:
                for done in asyncio.as_completed(tasks, timeout=max(1.0, deadline -
                                                                    time.monotonic())):
                    result = await done
                    if not result["ok"]:
                        stage("failed", f"a request failed: {result['error']}")
                        return False
                    answered += 1
                    host = result["responses"][0].get("worker", {}).get("host", "?")
                    stage("answered", f"{answered}/{requests} by {host} in "
                                      f"{result['latency_s']:.2f} s")
            except asyncio.TimeoutError:
                stage("failed", f"{answered}/{requests} answered within {timeout:.0f} s")
                return False
            return True
        finally:
            await wf.shutdown()
            stage("shutdown", "workers stopped and pilot jobs cancelled")


async def _follow(wf, scheduler: str, deadline: float, stage) -> bool:
    """Report submission, scheduler states and connected workers until a worker is there."""
    job_id, last_state = None, None
    while time.monotonic() < deadline:
        stats = await wf.get_parsl_stats()
        if stats.get("block_failures") and not stats.get("active_workers"):
            stage("failed", "the pilot job could not be submitted: "
                            + "; ".join(stats["block_failures"]))
            return False
        if job_id is None and stats.get("job_ids"):
            job_id = stats["job_ids"][0]
            stage("submitted", f"pilot job {job_id}")
        if job_id is not None:
            state = await asyncio.to_thread(pilot_state, scheduler, job_id)
            if state != last_state:
                stage("scheduler", f"job {job_id} {state}")
                last_state = state
            if job_ended(state) and not stats.get("active_workers"):
                stage("failed", f"the pilot job ended ({state}) before any worker "
                                f"connected{_output_tail(wf, job_id)}")
                return False
        if stats.get("active_workers"):
            stage("workers", f"{stats['active_workers']} connected in "
                             f"{stats.get('connected_blocks', 0)} block(s)")
            return True
        await asyncio.sleep(POLL_S)
    if job_id is None:
        stage("failed", "no pilot job was submitted before the time limit: check the "
                        "provider section of the profile")
        return False
    stage("failed", f"no worker connected before the time limit (job {job_id} {last_state}); "
                    f"workers must reach the driver's address (executor.address)")
    return False


def _output_tail(wf, job_id: str, lines: int = 5) -> str:
    """Where the pilot job's output is, and its last lines (the reason, usually)."""
    block_output = getattr(wf.executor, "block_output", None)
    text = ""
    for path in block_output(job_id) if block_output else []:
        try:
            tail = Path(path).read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            continue
        text += f"\n  {path}" + ("".join(f"\n  | {line}" for line in tail) or " (empty)")
    return f"; its output:{text}" if text else ""
