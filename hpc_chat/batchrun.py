"""One batch run: what to answer (resume bookkeeping), lines that fail before any work, where
a Globus Compute batch keeps its task group, and answering everything else as it completes.

The CLI's ``batch`` command parses options, calls this, and prints; ``jobs/driver.sh`` reaches
the same code through ``hpc-chat batch``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from hpc_chat.batchfile import (
    STDIO,
    BatchItem,
    OutputWriter,
    id_key,
    read_batch,
    read_output,
    records_from_lines,
)
from hpc_chat.errors import InputError
from hpc_chat.stats import summarize


class BatchRun:
    """A batch input against its output file: read, checked and opened before any worker
    starts, so a bad input or an unwritable output costs nothing.

    With ``resume``, an id is skipped when its last output line answered it, or failed because
    of the line itself (``error_kind: input``) and the line has not changed since; a line that
    failed at run time (a timeout, a lost worker) runs again only with ``retry_failed``.
    """

    def __init__(self, input_path: str, output: str, *, fmt: str = "auto",
                 resume: bool = False, retry_failed: bool = False,
                 endpoint: str | None = None):
        self.output, self.resume, self.endpoint = output, resume or retry_failed, endpoint
        if output != STDIO and input_path != STDIO and Path(output).exists() and \
                Path(input_path).exists() and os.path.samefile(input_path, output):
            raise InputError(f"{output}: the output is the input file; choose another output")
        self.items = read_batch(input_path, fmt)
        previous = read_output(output) if self.resume and output != STDIO else {}
        self.writer = OutputWriter(output, resume=self.resume)  # fails here if unwritable
        self.skipped = {"answered": 0, "input": 0, "runtime": 0}
        todo = []
        for it in self.items:
            last = previous.get(id_key(it.id))
            reason = _skip_reason(last, it, retry_failed) if last else None
            if reason:
                self.skipped[reason] += 1
            else:
                todo.append(it)
        self.bad = [it for it in todo if it.error]
        self.runnable = [it for it in todo if not it.error]

    def describe_skipped(self) -> str | None:
        s = self.skipped
        if not any(s.values()):
            return None
        parts = [f"{s['answered']} of {len(self.items)} prompts already answered"]
        if s["input"]:
            parts.append(f"{s['input']} unchanged lines that failed on their input")
        if s["runtime"]:
            parts.append(f"{s['runtime']} that failed at run time (rerun them with "
                         f"--retry-failed)")
        return f"resume: {', '.join(parts)} in {self.output}"

    def write_bad_lines(self) -> int:
        """An output line for each input line that cannot run (malformed, empty, ...)."""
        for it in self.bad:
            self.writer.write(it, None, finished_at=time.time())
        return len(self.bad)

    def globus_state(self) -> str | None:
        """With an endpoint, the task group is kept beside the output for ``--resume``; a new
        batch into a new output starts a new group."""
        if not self.endpoint:
            return None
        state = Path(f"{self.output}.globus.json")
        if not self.resume and state.exists():
            state.unlink()
        return str(state)

    def close(self) -> None:
        self.writer.close()


async def answer_all(workflow, items: list[BatchItem], writer: OutputWriter, *, agents=None,
                     options=None,
                     on_result: Callable[[BatchItem, dict], None] | None = None,
                     on_status: Callable[[str], None] | None = None) -> int:
    """Submit every item, write each result as it completes; returns the number failed.
    ``on_status`` hears what the workers are waiting for until the first one connects."""
    async def answer(item):
        return item, await workflow.submit_request(item.prompt, agents=agents, options=options,
                                                   request_key=id_key(item.id))

    watcher = asyncio.ensure_future(watch_workers(workflow, on_status)) if on_status else None
    failed = 0
    try:
        for next_done in asyncio.as_completed([answer(it) for it in items]):
            item, result = await next_done
            writer.write(item, result, finished_at=time.time())
            failed += not result["ok"]
            if on_result is not None:
                on_result(item, result)
    finally:
        if watcher is not None:
            watcher.cancel()
    return failed


async def watch_workers(workflow, on_status: Callable[[str], None],
                        every_s: float = 5.0) -> None:
    """Until a worker connects: ``waiting for workers: job 123 PENDING (Priority)``."""
    from hpc_chat.sites.submit import pilot_state

    while True:
        stats = await workflow.get_parsl_stats()
        if stats.get("active_workers") or workflow.profile is None:
            on_status("")
            return
        jobs = stats.get("job_ids") or []
        if workflow.profile.scheduler == "local":  # no scheduler: processes are starting
            on_status("waiting for workers to start")
        elif jobs:
            state = await asyncio.to_thread(pilot_state, workflow.profile.scheduler, jobs[0])
            on_status(f"waiting for workers: job {jobs[0]} {state}")
        else:
            on_status("waiting for workers: submitting a pilot job")
        await asyncio.sleep(every_s)


def job_banner(site: str | None, allocation: bool) -> str | None:
    """Inside a batch job, one line for its log: which job, where, how the workers start."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID")
    if not job:
        return None
    mode = "allocation" if allocation else "pilot"
    return (f"hpc-chat batch: job {job} on {socket.gethostname()}, mode {mode}, "
            f"site {site or 'local'}")


def _skip_reason(last: dict, item: BatchItem, retry_failed: bool) -> str | None:
    """Why a resumed run skips ``item`` given its last output line, or None to run it."""
    if last.get("ok") is True:
        return "answered"
    if last.get("error_kind") == "input":
        return "input" if last.get("prompt") == item.prompt else None  # else: it was edited
    return None if retry_failed else "runtime"


def summary(lines: list[dict], *, model_loads: int | None = None) -> dict:
    """The statistics of the lines one run wrote (what its summary table and its last line
    both count), with the model loads the workflow saw."""
    result = summarize(records_from_lines(lines))
    if model_loads is None:
        del result["model_loads"]
    else:
        result["model_loads"] = model_loads
    return result
