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

from hpc_chat.batchfile import BatchItem, OutputWriter, answered_ids, id_key, read_batch


class BatchRun:
    """A batch input against its output file: read, checked and opened before any worker
    starts, so a bad input or an unwritable output costs nothing."""

    def __init__(self, input_path: str, output: str, *, fmt: str = "auto",
                 resume: bool = False, endpoint: str | None = None):
        self.output, self.resume, self.endpoint = output, resume, endpoint
        self.items = read_batch(input_path, fmt)
        done = answered_ids(output) if resume else set()
        self.writer = OutputWriter(output, resume=resume)  # fails here if unwritable
        todo = [it for it in self.items if id_key(it.id) not in done]
        self.skipped = len(self.items) - len(todo)
        self.bad = [it for it in todo if it.error]
        self.runnable = [it for it in todo if not it.error]

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
                     on_result: Callable[[BatchItem, dict], None] | None = None) -> int:
    """Submit every item, write each result as it completes; returns the number failed."""
    async def answer(item):
        return item, await workflow.submit_request(item.prompt, agents=agents, options=options,
                                                   request_key=id_key(item.id))

    failed = 0
    for next_done in asyncio.as_completed([answer(it) for it in items]):
        item, result = await next_done
        writer.write(item, result, finished_at=time.time())
        failed += not result["ok"]
        if on_result is not None:
            on_result(item, result)
    return failed


def job_banner(site: str | None, allocation: bool) -> str | None:
    """Inside a batch job, one line for its log: which job, where, how the workers start."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID")
    if not job:
        return None
    mode = "allocation" if allocation else "pilot"
    return (f"hpc-chat batch: job {job} on {socket.gethostname()}, mode {mode}, "
            f"site {site or 'local'}")
