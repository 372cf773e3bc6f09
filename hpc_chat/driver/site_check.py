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

from hpc_chat.driver.startup import follow_workers
from hpc_chat.errors import ExecutorError

DEFAULT_MODEL = "echo?tokens=8"


async def check_site(site: str, *, report: Callable[[str, str], None], requests: int = 3,
                     timeout: float = 600.0, model: str = DEFAULT_MODEL,
                     config: str | None = None) -> bool:
    """Run ``requests`` echo requests on ``site``; ``report(stage, detail)`` is called as each
    stage is reached. True when every request was answered within ``timeout`` seconds."""
    from hpc_chat.driver.workflow import ParslChatWorkflow

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
            ok = await _follow(wf, deadline, stage)
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


async def _follow(wf, deadline: float, stage) -> bool:
    """Report submission, scheduler states and connected workers until a worker is there."""
    try:
        await asyncio.wait_for(
            follow_workers(wf, stage, timeout=wf.loaded.settings.executor.timeout),
            max(1.0, deadline - time.monotonic()))
        return True
    except ExecutorError as exc:
        stage("failed", str(exc))
    except asyncio.TimeoutError:
        stage("failed", "no worker connected before the time limit (--timeout)")
    return False
