"""Following workers from submission to connection, and failing with the reason when they
never come.

Every command that needs workers (``ask``, ``chat``, ``batch``, ``sites test``) follows them the
same way: the pilot job's submission, its scheduler state (``PENDING (Priority)``, ``RUNNING``),
then the workers connecting. Time spent waiting in the queue is the scheduler's business and is
never counted against the user; once the job runs (on the ``local`` site: at once), workers
have ``executor.timeout`` seconds to connect. Before that, the scheduler has the same time to
show a pilot job at all (a submission that hangs, or a job the scheduler never lists).
A pilot job refused by the scheduler, one that ended before any worker connected (a bad
``worker_init``, a module missing on the compute node) or workers that never connect (an
address the compute nodes cannot reach) end the command with an :class:`ExecutorError` that
quotes the end of the job's own output, where the reason is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from hpc_chat.errors import ExecutorError
from hpc_chat.sites.ledger import process_start
from hpc_chat.sites.schedulers import SCHEDULERS, JobState, JobStatus
from hpc_chat.sites.submit import pilot_state

POLL_S = 1.0
Report = Callable[[str, str], None]  # (stage, detail): submitted, scheduler, workers


async def follow_workers(wf, report: Report, *, timeout: float,
                         poll_s: float = POLL_S) -> int:
    """Report each stage until a worker connects; returns the workers connected. Raises
    :class:`ExecutorError` with the reason when they cannot start (see the module docstring).
    Executors without pilot jobs (local threads, Globus Compute) return at once."""
    if wf.profile is None or wf.executor.scheduler is None:
        return 0
    scheduler = run_scheduler(wf)
    job_id, last_state, running_since = None, None, None
    unplaced_since = time.monotonic()  # no job id yet, or no state the scheduler knows
    while True:
        stats = await wf.get_parsl_stats()
        if stats.get("active_workers"):
            report("workers", f"{stats['active_workers']} connected in "
                              f"{stats.get('connected_blocks', 0)} block(s)")
            return stats["active_workers"]
        if stats.get("block_failures"):
            raise ExecutorError("the pilot job could not be submitted: "
                                + "; ".join(stats["block_failures"]))
        jobs = stats.get("job_ids") or []
        if jobs and jobs[-1] != job_id:
            job_id = jobs[-1]
            report("submitted", f"pilot job {job_id}" if scheduler != "local"
                   else f"worker pool (pid {job_id})")
        if job_id is not None:
            state = await asyncio.to_thread(_state, scheduler, job_id)
            if state != last_state:
                report("scheduler", f"job {job_id} {state}")
                last_state = state
            if state.ended:
                what = f"pilot job {job_id} ended ({state})" if scheduler != "local" else \
                    f"worker pool (pid {job_id}) exited"
                raise ExecutorError(f"the {what} before any worker connected"
                                    f"{output_tail(wf, job_id)}")
            if running_since is None and state.state is JobState.RUNNING:
                running_since = time.monotonic()
            if state.state is not JobState.UNKNOWN:
                unplaced_since = None
        if unplaced_since is not None and time.monotonic() - unplaced_since > timeout:
            raise ExecutorError(
                f"no pilot job was submitted and known to the scheduler within "
                f"executor.timeout={timeout:.0f} s"
                + (f" (job {job_id}: {last_state})" if job_id else
                   " (with init_blocks: 0 a block is submitted only when work arrives)"))
        if running_since is not None and time.monotonic() - running_since > timeout:
            raise ExecutorError(
                f"no worker connected within executor.timeout={timeout:.0f} s of job "
                f"{job_id} running: workers must reach the driver's address "
                f"(executor.address or interface in the site profile)"
                f"{output_tail(wf, job_id)}")
        await asyncio.sleep(poll_s)


def run_scheduler(wf) -> str:
    """Who runs this run's blocks: the profile's scheduler for pilot jobs, ``local`` for the
    local site and for the driver job's own allocation (its blocks are processes)."""
    found = wf.executor.scheduler if wf.executor is not None else None
    return found or (wf.profile.scheduler if wf.profile is not None else "local")


def _state(scheduler: str, job_id: str) -> JobStatus:
    """The block's state; a ``local`` block is a process group, running while it lives."""
    if scheduler == "local":
        alive = job_id.isdigit() and process_start(int(job_id)) is not None
        return SCHEDULERS["local"].status("RUNNING" if alive else "FINISHED")
    return pilot_state(scheduler, job_id)


def output_tail(wf, job_id: str, lines: int = 8) -> str:
    """Where the workers' job wrote its output, and the last lines (the reason, usually)."""
    text = ""
    for path in wf.executor.block_output(job_id):
        try:
            tail = Path(path).read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            continue
        text += f"\n  {path}" + ("".join(f"\n  | {line}" for line in tail) or " (empty)")
    return f"; its output:{text}" if text else ""
