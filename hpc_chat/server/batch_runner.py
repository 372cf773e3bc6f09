"""Running the Batch API's batches on the server's own workers, beside interactive traffic.

A batch goes ``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed`` (or
``failed`` when its file does not validate, ``cancelling`` -> ``cancelled``, ``expired`` after
its 24 h window). Its input file is read a line at a time, twice (once to validate, once to
answer), never held: what a batch keeps is 8 bytes a line (its custom_ids' hashes).

- **Validation** refuses the whole file, naming each bad line (up to :data:`MAX_ERRORS`), for
  what no request could be made of: a line that is not JSON, not an object, without a
  ``custom_id`` (or with one used before), another method or URL than the batch's endpoint, or
  no ``body`` object. A request whose body is wrong (an unknown parameter, a model that does
  not exist, a prompt too long) is that request's failure: its line goes to the error file, as
  OpenAI's, and the rest is answered. Blank lines are passed over.
- **Answering**: each request is answered as the endpoint would answer it
  (:func:`hpc_chat.batch.run.answer_one`), written in OpenAI's batch output shape as soon as it
  completes (:func:`hpc_chat.batch.output.openai_record`). At most a window of requests is in
  flight: what the workers decode at once and one micro-batch more (:meth:`Gate.capacity`),
  less the interactive requests being answered. A chat therefore waits at most for one
  micro-batch of the batch ahead of it, never behind the rest of the file. No request is sent
  while no model is loaded (a pilot job ended), and a request that failed because the workers
  went away under it is asked again once they are back.
- **Restart**: what is written is the record. A server started again reads the custom_ids in
  the batch's output and error files (a line cut short by a kill is cut off) and answers only
  the others: nothing lost, nothing twice. The ids are kept as 64-bit hashes.
- **Cancel**: no new request is sent; those in flight finish and are written; the output file
  keeps every answer made.
- **One runner per home**: the server that holds ``batches/runner.lock`` runs them
  (:meth:`BatchStore.take_lock`); two would answer each line twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpc_chat.batch.output import dumps_line, failed_result, native_line, openai_record
from hpc_chat.batch.run import answer_one
from hpc_chat.openai.params import RequestError
from hpc_chat.protocol.failure import FailureCode
from hpc_chat.server.batch_files import Appender, add_usage, requests, validate, written
from hpc_chat.server.batch_pilots import job_ids, requested, start
from hpc_chat.server.batch_store import BatchStore, derived_id

log = logging.getLogger(__name__)

SAVE_EVERY_S = 1.0  # a running batch's counts reach its record at most this often
RETRIES = 3  # times a line is asked again after the workers went away under it
WORKERS_GONE_S = 3.0  # for the server to see that the workers are gone (it checks every 2 s)
EXPIRED = RequestError("the batch's 24h completion window ended before this request was "
                       "sent", status=400, code="batch_expired")


class Gate:
    """How many batch requests may be in flight now: the workers' capacity less the
    interactive requests being answered, and none while no model is loaded. A batch on pilot
    jobs of its own has a gate of its own: its workflow's workers, no interactive traffic, and
    requests sent while its jobs wait in the scheduler's queue (Parsl holds them)."""

    POLL_S = 0.05

    def __init__(self, state, workflow=None):
        self.state, self.used, self.own = state, 0, workflow
        self._wake = asyncio.Event()
        self._capacity, self._checked = 0, 0.0

    @property
    def workflow(self):
        return self.own or self.state.workflow

    @property
    def ready(self) -> bool:
        return self.own is not None or self.state.ready

    async def capacity(self) -> int:
        """What the workers decode at once (each node engine's slot cap as its answers say,
        or each worker's own micro-batch when workers decode their own), and one micro-batch
        more, ready when a slot frees; asked of Parsl every few seconds, as pilot jobs come
        and go."""
        if time.monotonic() - self._checked > 5.0:
            wf = self.workflow
            settings = wf.loaded.settings
            stats = await wf.get_parsl_stats()
            per_task = settings.performance.batch_size
            decoding = (stats.get("active_workers") or settings.executor.max_workers) * per_task
            if wf.site_model.engine == "node":  # the slot cap the engines say they run at
                slots = wf.site_model.engine_slots
                if self.own is None:  # a batch's own engines answer to its gate alone
                    slots = min(slots, self.state.board.cap() or slots)
                decoding = min(decoding, (stats.get("managers") or 1) * slots)
            self._capacity = decoding + per_task
            self._checked = time.monotonic()
        return self._capacity

    async def acquire(self, stopping: Callable[[], bool]) -> bool:
        """Wait for a place in the window; False (no place taken) once ``stopping()``."""
        while True:
            if stopping():
                return False
            busy = 0 if self.own is not None else self.state.in_flight
            if self.ready and self.used < await self.capacity() - busy:
                self.used += 1
                return True
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.POLL_S)
            except asyncio.TimeoutError:
                pass

    def release(self) -> None:
        self.used -= 1
        self._wake.set()


class BatchRunner:
    """Every batch of the store that is not finished, each in a task of its own."""

    def __init__(self, store: BatchStore, state):
        self.store, self.state, self.gate = store, state, Gate(state)
        self.tasks: dict[str, asyncio.Task] = {}
        self.live: dict[str, dict[str, Any]] = {}  # the records of the batches running
        self.progress: dict[str, Progress] = {}
        self.starting = asyncio.Lock()  # the batches' own pilot workflows, started in turn

    def start(self) -> None:
        for record in self.store.unfinished():
            self.launch(record["id"])

    def launch(self, batch_id: str) -> None:
        task = asyncio.ensure_future(self._run(batch_id))
        self.tasks[batch_id] = task
        task.add_done_callback(lambda t: self._ended(batch_id, t))

    def _ended(self, batch_id: str, task: asyncio.Task) -> None:
        """A batch's task is over. One that broke on a line it could not write (a full disk)
        stays ``in_progress``, to go on at the next start; one that broke on anything else
        fails with the reason, rather than break again at every start."""
        self.tasks.pop(batch_id, None)
        record = self.live.pop(batch_id, None)
        self.progress.pop(batch_id, None)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("batch %s stopped: %r", batch_id, exc, exc_info=exc)
        if record is not None and not isinstance(exc, OSError):
            self._fail(record, [{"code": "internal_error", "line": None, "param": None,
                                 "message": f"the batch stopped: {type(exc).__name__}: {exc} "
                                            f"(the server's log has the details)"}])

    def record(self, batch_id: str) -> dict[str, Any] | None:
        """A batch as it is now: a running one's counts are newer than its stored record's."""
        return self.live.get(batch_id) or self.store.batch(batch_id)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Mark the batch cancelling; its task sends nothing more and ends it as cancelled
        once its requests in flight are written."""
        record = self.record(batch_id)
        record.update(status="cancelling", cancelling_at=int(time.time()))
        self.store.save_batch(record)
        if batch_id not in self.tasks:
            self.launch(batch_id)
        return record

    async def stop(self) -> None:
        """The server is stopping: unfinished batches stay as they are, to go on at the next
        start (requests in flight are asked again then)."""
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def status(self) -> list[dict[str, Any]]:
        """Progress of the batches running now, for ``/v1/status`` and the Batch object."""
        return [p.summary() for p in self.progress.values()]

    # ------------------------------------------------------------------------------ a batch

    async def _run(self, batch_id: str) -> None:
        record = self.live[batch_id] = self.store.batch(batch_id)
        found = self.store.file(record["input_file_id"])
        if found is None:
            return self._fail(record, [{"code": "file_not_found", "line": None, "param":
                                        "input_file_id", "message": "the input file was "
                                        "deleted before the batch could start"}])
        path = found[1]
        if record["status"] == "validating":
            total, errors, model = await asyncio.to_thread(validate, path, record["endpoint"])
            if errors:
                return self._fail(record, errors)
            record["request_counts"]["total"], record["model"] = total, model
            if record["status"] == "validating":  # (not cancelled meanwhile)
                record.update(status="in_progress", in_progress_at=int(time.time()))
            self.store.save_batch(record)
        if record["status"] in ("in_progress", "cancelling"):
            pilots = requested(record.get("metadata"), self.state.workflow)
            if pilots is None or record["status"] == "cancelling" or \
                    time.time() > record["expires_at"]:  # nothing will be sent: no jobs
                await self._answer(record, path, self.gate)
            else:
                await self._answer_on_own_jobs(record, path, pilots)
        self._finalize(record)

    async def _answer_on_own_jobs(self, record: dict[str, Any], path: Path, pilots) -> None:
        """Answer on pilot jobs of the batch's own (:mod:`hpc_chat.server.batch_pilots`),
        cancelled as soon as the batch's last line is written, or it stops."""
        async with self.starting:  # one Parsl start at a time: they share the run directory
            wf = await start(pilots, self.state.workflow, self.store.work_dir(record["id"]))
        try:
            await self._answer(record, path, Gate(self.state, wf), pilots)
        finally:
            await wf.shutdown()

    def _fail(self, record: dict[str, Any], errors: list[dict[str, Any]]) -> None:
        record.update(status="failed", failed_at=int(time.time()),
                      errors={"object": "list", "data": errors})
        self.store.save_batch(record)

    async def _answer(self, record: dict[str, Any], path: Path, gate: Gate,
                      pilots=None) -> None:
        """Answer every request not written yet; returns when each has an outcome in the
        output or error file, or the batch is cancelled; raises (the batch stays
        ``in_progress``, to go on at the next start) when a line cannot be written."""
        work = self.store.work_dir(record["id"])
        done, counts, usage = await asyncio.to_thread(written, work)
        record["request_counts"].update(completed=counts[0], failed=counts[1])
        record["usage"] = usage
        progress = self.progress[record["id"]] = Progress(record, pilots)
        if gate.own is not None:
            progress.jobs = lambda: job_ids(gate.own)

        def cancelled() -> bool:
            return record["status"] == "cancelling"

        def stopping() -> bool:
            return cancelled() or self._expired(record, progress)

        with Appender(work / "output.jsonl") as out, Appender(work / "errors.jsonl") as err:
            def write(item, result) -> None:
                line, failed = openai_record(item, native_line(item, result, time.time()))
                (err if failed else out).write(dumps_line(line) + "\n")
                record["request_counts"]["failed" if failed else "completed"] += 1
                if not failed:
                    add_usage(record["usage"], line)
                if progress.due():
                    self.store.save_batch(record)

            def write_expired(item) -> None:
                item.problem = EXPIRED
                write(item, failed_result(str(EXPIRED), FailureCode.GENERATION_FAILED))

            async def one(item) -> None:
                try:
                    result = await self._answered(item, stopping, gate)
                except asyncio.CancelledError:
                    if progress.expired and not cancelled():  # its jobs never came: expired
                        write_expired(item)
                    raise
                write(item, result)

            in_flight: set[asyncio.Task] = set()
            broken: list[BaseException] = []

            def finished(task: asyncio.Task) -> None:
                in_flight.discard(task)
                gate.release()  # here, not in the task: one cancelled unstarted too
                if not task.cancelled() and task.exception() is not None:
                    broken.append(task.exception())

            chunks = requests(path)
            try:
                while not broken and not cancelled():
                    chunk = await asyncio.to_thread(next, chunks, None)
                    if chunk is None:
                        break
                    for item in chunk:
                        if broken or cancelled():
                            break
                        if item is None or (item.id is not None and item.id in done):
                            continue
                        if item.error or item.id is None:
                            write(item, None)
                        elif await gate.acquire(stopping):
                            task = asyncio.ensure_future(one(item))
                            in_flight.add(task)
                            task.add_done_callback(finished)
                        elif not cancelled():  # the 24 h window ended: written as expired
                            write_expired(item)
                await _drain(in_flight, stopping, gate)
                if broken:
                    raise broken[0]
            except BaseException:
                for task in in_flight:
                    task.cancel()
                raise
            finally:
                with contextlib.suppress(ValueError):  # still being read by a cancelled thread
                    chunks.close()
                self.store.save_batch(record)

    async def _answered(self, item, stopping: Callable[[], bool], gate: Gate
                        ) -> dict[str, Any]:
        """``item``'s result. One that failed because the workers went away under it (a pilot
        job ended) is asked again once a model is loaded, up to :data:`RETRIES` times, rather
        than written as failed; any other failure is the line's outcome."""
        wf = gate.workflow
        for attempt in range(RETRIES + 1):
            try:
                result = await answer_one(wf, item)
                self.state.board.saw(result)  # the status page's engines and tokens
            except Exception as exc:  # noqa: BLE001 - the line's outcome, not the batch's end
                log.exception("batch line %s", item.line)
                return failed_result(f"the request could not be run: {type(exc).__name__}: "
                                     f"{exc}", FailureCode.GENERATION_FAILED)
            if result["ok"] or result.get("error_kind") != "runtime" or attempt == RETRIES \
                    or stopping() or (await wf.get_parsl_stats()).get("active_workers"):
                return result
            await asyncio.sleep(WORKERS_GONE_S)  # the server notices, and is not ready
            while not gate.ready and not stopping():
                await asyncio.sleep(1.0)
        return result

    @staticmethod
    def _expired(record: dict[str, Any], progress: Progress) -> bool:
        if not progress.expired and time.time() > record["expires_at"]:
            progress.expired = True
            record["expired_at"] = int(time.time())  # kept: a restart ends it as expired too
        return progress.expired

    def _finalize(self, record: dict[str, Any]) -> None:
        now = int(time.time())
        record.update(status="finalizing", finalizing_at=record.get("finalizing_at") or now)
        self.store.save_batch(record)
        work = self.store.work_dir(record["id"])
        for kind, name in (("output_file_id", "output.jsonl"), ("error_file_id", "errors.jsonl")):
            path = work / name
            if record.get(kind) is None and path.exists() and path.stat().st_size:
                record[kind] = self.store.add_file(  # its id made from the batch's: once
                    path, filename=f"{record['id']}_{name}", purpose="batch_output",
                    file_id=derived_id(record["id"], name))["id"]
        if record.get("cancelling_at"):
            record.update(status="cancelled", cancelled_at=now)
        elif record.get("expired_at"):
            record.update(status="expired")
        else:
            record.update(status="completed", completed_at=now)
        self.store.save_batch(record)


class Progress:
    """A running batch's rate since this server started it, and when it will be done."""

    def __init__(self, record: dict[str, Any], pilots=None):
        self.record, self.start, self.pilots = record, time.monotonic(), pilots
        self.jobs: Callable[[], list[str]] = list  # the pilot jobs' ids, once submitted
        counts = record["request_counts"]
        self.done_at_start = counts["completed"] + counts["failed"]
        self.tokens_at_start = record["usage"]["output_tokens"]
        self._saved = 0.0
        self.expired = bool(record.get("expired_at"))  # the 24 h window ended

    def due(self) -> bool:
        if time.monotonic() - self._saved < SAVE_EVERY_S:
            return False
        self._saved = time.monotonic()
        return True

    def summary(self) -> dict[str, Any]:
        counts, elapsed = self.record["request_counts"], max(time.monotonic() - self.start,
                                                             1e-6)
        done = counts["completed"] + counts["failed"]
        rate = (done - self.done_at_start) / elapsed
        left = max(counts["total"] - done, 0)
        return {"id": self.record["id"], "status": self.record["status"],
                "total": counts["total"], "completed": counts["completed"],
                "failed": counts["failed"], "requests_per_s": round(rate, 2),
                "output_tokens_per_s": round((self.record["usage"]["output_tokens"] -
                                              self.tokens_at_start) / elapsed, 1),
                "eta_s": round(left / rate, 1) if rate > 0 else None,
                "pilot_jobs": None if self.pilots is None else {
                    "site": self.pilots.name, "blocks": self.pilots.blocks,
                    "job_ids": self.jobs()}}


async def _drain(in_flight: set[asyncio.Task], stopping: Callable[[], bool],
                 gate: Gate) -> None:
    """Wait for the requests in flight to be written. On pilot jobs of the batch's own that
    have no worker (still queued, or never to run), a cancel or the end of the window does
    not wait for them: they are stopped (an expired one written as such), and the jobs are
    cancelled with the batch's workflow."""
    while in_flight:
        await asyncio.wait(set(in_flight), timeout=None if gate.own is None else 1.0)
        if in_flight and gate.own is not None and stopping() and not (
                await gate.own.get_parsl_stats()).get("active_workers"):
            for task in in_flight:
                task.cancel()
            await asyncio.wait(set(in_flight))
