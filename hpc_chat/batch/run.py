"""One batch run: what to answer (resume bookkeeping), lines that fail before any work, where
a Globus Compute batch keeps its task group, and answering everything else as it completes.

The CLI's ``batch`` command parses options, calls this, and prints; ``jobs/driver.sh`` reaches
the same code through ``hpc-chat batch``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from array import array
from collections.abc import Callable
from pathlib import Path

from hpc_chat.batch.embed import embedding_result
from hpc_chat.batch.input import (
    STDIO,
    BatchItem,
    LinesOf,
    id_key,
    item_key,
    iter_batch,
    rereadable,
)
from hpc_chat.batch.outcomes import Outcome, OutcomeIndex, digest
from hpc_chat.batch.output import OutputWriter, failed_result, unknown_model
from hpc_chat.driver.embeddings import slices
from hpc_chat.driver.pool_size import answers_at_once, workers_to_start
from hpc_chat.driver.startup import follow_workers, run_scheduler
from hpc_chat.driver.stats import Summary
from hpc_chat.errors import InputError
from hpc_chat.openai.batch import ROUTED_MODEL, RequestError, line_options
from hpc_chat.openai.embeddings import EmbeddingLine
from hpc_chat.protocol.failure import FailureCode
from hpc_chat.util.outputfiles import PRIVATE

# Requests of a batch in flight at once. Each costs the driver its task, its Parsl record and
# its micro-batch entry until it is answered, so a million-line batch submitted whole would
# hold them all; this many keeps every worker of a large allocation busy (and shows Parsl's
# scaling strategy the demand for more blocks) at a bounded cost.
IN_FLIGHT = 4096


class BatchRun:
    """A batch input against its output file: read, checked and opened before any worker
    starts, so a bad input or an unwritable output costs nothing.

    With ``resume``, resume is keyed on id and prompt: an id is skipped when its last output
    line has the same prompt and answered it, or failed because of the line itself
    (``error_kind: input``); a line that failed at run time (a timeout, a lost worker) runs
    again only with ``retry_failed``. An id whose prompt was edited since runs again, and is
    reported; a new id runs.
    """

    def __init__(self, input_path: str, output: str, *, fmt: str = "auto",
                 output_format: str = "auto", resume: bool = False,
                 retry_failed: bool = False, endpoint: str | None = None,
                 mode: int = PRIVATE):
        self.output, self.resume, self.endpoint = output, resume or retry_failed, endpoint
        if output != STDIO and input_path != STDIO and Path(output).exists() and \
                Path(input_path).exists() and os.path.samefile(input_path, output):
            raise InputError(f"{output}: the output is the input file; choose another output")
        fmt, stream = iter_batch(input_path, fmt)
        again_readable = rereadable(input_path)
        if not again_readable:  # standard input, a pipe: they cannot be read again: held
            held = list(stream)
            again = lambda: iter(held)  # noqa: E731
        else:
            if fmt == "openai":  # read once to check: a repeated custom_id raises before any
                for _ in stream:  # output exists
                    pass
            again = lambda: iter_batch(input_path, fmt)[1]  # noqa: E731
        self.format = fmt
        style = output_format if output_format != "auto" else \
            ("openai" if fmt == "openai" else "native")
        adjust = None
        if style == "openai" and fmt != "openai":
            _ids_as_custom_ids(again(), input_path)
            adjust = _as_custom_id
        self.writer = OutputWriter(output, resume=self.resume, style=style, mode=mode)  # locked
        try:
            self.previous = None
            self._decide(output, retry_failed, again, adjust, again_readable, input_path, fmt)
        except BaseException:
            self.close()  # the lock is not held on by a run that did not start
            raise

    def _decide(self, output, retry_failed, again, adjust, again_readable, input_path, fmt):
        """What runs, what is skipped, and why (see the class)."""
        # Read under the lock: another run cannot be appending to it now. The index is on
        # disk (batch.outcomes): a corpus's earlier answers are not held in memory.
        self.previous = OutcomeIndex(output) if self.resume and output != STDIO else None
        self.total = 0
        self.skipped = {"answered": 0, "input": 0, "runtime": 0}
        self.changed: list[BatchItem] = []  # answered, but the prompt is not the same (5 kept)
        self.changed_count = 0
        # Answered before under another line number: the line, and where its answer is.
        moved_lines, self.moved_answers = array("I"), array("Q")
        self.bad: list[BatchItem] = []
        # What runs is kept as line numbers and read again when it is answered: a corpus is
        # not held in memory (standard input excepted).
        lines, held_runnable, held_moved = array("I"), [], []
        for it in again():
            self.total += 1
            if adjust is not None:
                adjust(it)
            last = self.previous.get(item_key(it)) if self.previous is not None else None
            if (last is None or last.prompt != digest(it.prompt)) and it.id == it.line and \
                    isinstance(it.prompt, str):
                where = self.previous.answered_at(it.prompt) if self.previous else None
                if where is not None:
                    # Its id is its line number, and lines were inserted or removed above it:
                    # the prompt was answered under its old line number.
                    self.moved_answers.append(where)
                    if again_readable:
                        moved_lines.append(it.line)
                    else:
                        held_moved.append(it)
                    continue
            reason = _skip_reason(last, it, retry_failed) if last else None
            if reason:
                self.skipped[reason] += 1
                continue
            if last and last.ok:
                self.changed_count += 1
                if len(self.changed) < 5:
                    self.changed.append(it)
            if it.error:
                self.bad.append(it)
            elif not again_readable:
                held_runnable.append(it)
            else:
                lines.append(it.line)
        self.runnable = LinesOf(Path(input_path), fmt, lines, adjust) if again_readable \
            else held_runnable
        self.moved = LinesOf(Path(input_path), fmt, moved_lines, adjust) if again_readable \
            else held_moved

    def describe_skipped(self) -> str | None:
        s = self.skipped
        if not any(s.values()) and not self.changed and not self.moved:
            return None
        parts = [f"{s['answered']} of {self.total} prompts already answered"]
        if self.moved:
            parts.append(f"{len(self.moved)} answered before on another line (their answers "
                         f"are copied to their new line numbers)")
        if self.changed:
            ids = ", ".join(str(it.id) for it in self.changed[:5])
            more = f" and {self.changed_count - 5} more" if self.changed_count > 5 else ""
            parts.append(f"{self.changed_count} whose prompt is not the one answered under its "
                         f"id (id {ids}{more}: answered now; the later line is the answer)")
        if s["input"]:
            parts.append(f"{s['input']} unchanged lines that failed on their input")
        if s["runtime"]:
            parts.append(f"{s['runtime']} that failed at run time (rerun them with "
                         f"--retry-failed)")
        return f"resume: {', '.join(parts)} in {self.output}"

    def write_bad_lines(self) -> int:
        """Lines that need no worker: the answers of moved prompts under their new line
        numbers, and an error line for each input line that cannot run (malformed, empty,
        ...); returns the number of error lines."""
        for it, where in zip(self.moved, self.moved_answers):  # copies: not this run's work
            line = self.previous.read(where)
            finished = line.get("finished_at")
            self.writer.write(it, line, counted=False, finished_at=finished
                              if isinstance(finished, (int, float)) else time.time())
        self.moved_answers = array("Q")
        if self.previous is not None:
            self.previous.close()  # what resume needed of the output is decided and copied
            self.previous = None
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
        if self.previous is not None:
            self.previous.close()
        self.writer.close()


def workers_to_use(workflow, items: list[BatchItem], agents=None) -> int:
    """The most workers a node's pool can keep busy with ``items`` (asked of ``agents``, or
    each line's own), counted as :mod:`hpc_chat.driver.pool_size` says, before ``workflow``
    starts."""
    loaded, remote = workflow.check(), workflow.remote_models

    def answers(item: BatchItem) -> int:
        req = item.request
        if isinstance(req, EmbeddingLine):
            return slices(len(req.inputs))
        if req is None:
            return answers_at_once(loaded, str(item.prompt), agents, remote)
        return answers_at_once(loaded, req.prompt, req.agents, remote)
    return workers_to_start(map(answers, items))


async def answer_with_workflow(workflow, items: list[BatchItem], writer: OutputWriter, *,
                               agents=None, options=None,
                               on_result: Callable[[BatchItem, dict], None] | None = None,
                               on_status: Callable[[str], None] | None = None) -> int:
    """Submit the items, at most :data:`IN_FLIGHT` at a time, and write each result as it
    completes; returns the number failed.

    Until the first worker connects, ``on_status`` hears what the workers are waiting for;
    workers that cannot start end the batch with an :class:`ExecutorError` (the lines written
    so far stay), instead of a wait without end."""
    status = on_status or (lambda text: None)
    watching = asyncio.ensure_future(follow_workers(
        workflow, _status_line(workflow, status),
        timeout=workflow.loaded.settings.executor.timeout))
    writing = asyncio.current_task()

    def watched(task: asyncio.Task) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            writing.cancel()  # the workers cannot start: stop waiting for answers
        else:
            status("")

    watching.add_done_callback(watched)
    failed = 0
    waiting = iter(items)
    running: set[asyncio.Future] = set()
    finished: asyncio.Queue = asyncio.Queue()  # each answer as it completes: O(1) a line

    def refill() -> None:
        for it in itertools.islice(waiting, IN_FLIGHT - len(running)):
            task = asyncio.ensure_future(_paired(workflow, it, agents, options))
            running.add(task)
            task.add_done_callback(finished.put_nowait)
    try:
        refill()
        while running:
            next_done = await finished.get()
            running.discard(next_done)
            item, result = next_done.result()
            writer.write(item, result, finished_at=time.time())
            failed += not result["ok"]
            if on_result is not None:
                on_result(item, result)
            refill()
    except asyncio.CancelledError:
        # Cancelled (the workers cannot start, or the run is stopped): nothing is left waiting
        # for an answer nobody will write. (A Ctrl-C leaves the answers submitted running: on
        # Globus Compute, --resume fetches them instead of asking again.)
        for task in running:
            task.cancel()
        if watching.done() and not watching.cancelled() and watching.exception():
            raise watching.exception() from None
        raise
    finally:
        watching.cancel()
    return failed


async def answer_one(workflow, item: BatchItem, agents=None, options=None) -> dict:
    """The workflow's result for one runnable line: a native prompt (asked of ``agents``), an
    OpenAI chat request (its own model and options over the run's), or an embeddings line
    (every agent embeds; the routed ``auto`` does not). An unknown model is the line's own
    failure."""
    req = item.request
    if req is None:
        return await workflow.submit_request(item.prompt, agents=agents, options=options,
                                             request_key=id_key(item.id))
    if isinstance(req, EmbeddingLine):
        if req.model not in workflow.agents:
            return unknown_model(req.model, sorted(workflow.agents))
        return await embedding_result(workflow, req)
    if req.agents and req.agents[0] not in workflow.agents:
        return unknown_model(req.model, [*sorted(workflow.agents), ROUTED_MODEL])
    try:
        asked = line_options(req, options or {})
    except RequestError as exc:  # a run's format on a text completion
        return failed_result(str(exc), FailureCode.INVALID_REQUEST)
    return await workflow.submit_request(
        req.prompt, agents=req.agents, options=asked, request_key=id_key(item.id),
        history=req.history, system_prompt=req.system)


async def _paired(workflow, item: BatchItem, agents, options) -> tuple[BatchItem, dict]:
    """The item with its answer (the answer's coroutine made here: a task cancelled before
    it starts leaves none behind unawaited)."""
    return item, await answer_one(workflow, item, agents, options)


def _status_line(workflow, on_status: Callable[[str], None]):
    """What a batch shows while it waits: ``waiting for workers: job 123 PENDING (Priority)``."""
    local = run_scheduler(workflow) == "local"

    def report(stage: str, detail: str) -> None:
        if stage == "scheduler" and not local:
            on_status(f"waiting for workers: {detail}")
        elif stage == "submitted":
            on_status("waiting for workers to start" if local
                      else f"waiting for workers: {detail} submitted")
    return report


def job_banner(site: str | None, allocation: bool) -> str | None:
    """Inside a batch job, one line for its log: which job, where, how the workers start."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID")
    if not job:
        return None
    mode = "allocation" if allocation else "pilot"
    return (f"hpc-chat batch: job {job} on {socket.gethostname()}, mode {mode}, "
            f"site {site or 'local'}")


def _skip_reason(last: Outcome, item: BatchItem, retry_failed: bool) -> str | None:
    """Why a resumed run skips ``item`` given its last output line, or None to run it.
    ``retry_failed`` reruns every failure of a line that can run, those that failed on their
    input too (an unknown model or a context too small may be fixed in the config since)."""
    if last.request != digest(item.fingerprint):
        return None  # the input was edited since: this is another request
    if last.ok:
        return "answered"
    if retry_failed and item.error is None:
        return None
    return "input" if last.error_kind == "input" else "runtime"


def _ids_as_custom_ids(items, input_path: str) -> None:
    """Native ids become OpenAI custom_ids (strings, :func:`_as_custom_id`); ids that become
    the same string (``7`` and ``"7"``) are refused, as a repeated custom_id is."""
    seen: dict[str, int] = {}
    for it in items:
        if it.id is None:
            continue
        ident = str(it.id)
        if it.error is None and ident in seen:
            raise InputError(f"{input_path}: ids on line {seen[ident]} and line {it.line} "
                             f"are both {ident!r} as OpenAI custom_ids; make them distinct")
        seen.setdefault(ident, it.line)


def _as_custom_id(item: BatchItem) -> None:
    if item.id is not None:
        item.id = str(item.id)


def summary(totals: Summary, *, model_loads: int | None = None) -> dict:
    """The statistics of the lines one run wrote (what its summary table and its last line
    both count), with the model loads the workflow saw."""
    result = totals.result()
    if model_loads is None:
        del result["model_loads"]
    else:
        result["model_loads"] = model_loads
    return result
