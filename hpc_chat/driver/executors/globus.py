"""``GlobusComputeExecutor``: the workflow's executor interface over the SDK's ``Executor``.

The rest of the workflow (routing, aggregation, history, statistics, batch, resume) is the
same code path as with Parsl; only where tasks run changes.

* Data goes as JSON (``JSONData``), so endpoints limited to JSON arguments accept it; each
  submission is checked against the service's 10 MB limit before it is sent. Results are only
  deserialized from JSON (``allowed_deserializer_types``): a result in dill's format, which
  would run code on the user's machine when loaded, is refused.
* The SDK's ``Executor`` batches submissions and keeps to the service's rate limits
  (``batch_size``; ``api_burst_limit`` requests per ``api_burst_window_s``).
* For batches, the task group id is saved (``STATE.json``) before anything is submitted, and
  each task id with its request and agent as soon as the service returns it (``STATE.tasks``).
  ``--resume`` after a driver crash reattaches to that task group and takes the results of
  tasks that finished (or are still running) instead of submitting them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpc_chat.driver.executors.base import WithoutBlocks
from hpc_chat.errors import ExecutorError, InputError
from hpc_chat.worker.remote import remote_chat

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # the service's limit on a submission and on a result


def json_results_serializer():
    """The SDK's serializer, sending arguments as JSON and deserializing JSON results only.

    The SDK's allowlist (``allowed_deserializer_types``) must name a code deserializer as well
    as a data one, and every code deserializer runs code; results never carry code, so its
    check (``assert_deserializer_allowed``) is narrowed to JSON data here.
    """
    from globus_compute_sdk.errors import DeserializationError
    from globus_compute_sdk.serialize import ComputeSerializer, JSONData

    class JSONResultsOnly(ComputeSerializer):
        def assert_deserializer_allowed(self, strategy) -> None:
            if type(strategy) is not JSONData:
                raise DeserializationError(
                    f"a result serialized with {type(strategy).__name__} was refused: only "
                    f"JSON results are accepted (loading it could run code on this machine)")

    return JSONResultsOnly(strategy_data=JSONData())


class GlobusComputeExecutor(WithoutBlocks):
    """Tasks on a Globus Compute endpoint (a :class:`~hpc_chat.driver.executors.base.ChatExecutor`);
    each request is its own task (no grouping: the endpoint's workers decide)."""

    chat_function = staticmethod(remote_chat)
    supports_batching = False

    def __init__(self, endpoint_id: str, *, state_path: str | Path | None = None,
                 client=None, batch_size: int = 128):
        try:
            self.endpoint_id = str(uuid.UUID(str(endpoint_id)))
        except ValueError:
            raise InputError(f"--endpoint: {endpoint_id!r} is not an endpoint id (a UUID, as "
                             f"printed by 'globus-compute-endpoint list')") from None
        self.state_path = Path(state_path) if state_path else None
        self.client = client
        self.batch_size = batch_size
        self.task_group_id: str | None = None
        self._gce = None
        self._serializer = None
        self._reattached: dict[str, Any] = {}
        self._tagged: list[tuple[str, Any]] = []
        self._recorded: set[str] = set()
        self._lock = threading.Lock()
        self._recorder: asyncio.Task | None = None
        self._submitted = self._done = self._failed = 0

    @property
    def started(self) -> bool:
        return self._gce is not None

    # ------------------------------------------------------------------ lifecycle
    async def initialize(self) -> None:
        if self.started:
            return
        from globus_compute_sdk import Executor
        from globus_compute_sdk.serialize import JSONData

        from hpc_chat.globus.client import make_client

        client = self.client or await asyncio.to_thread(make_client)
        state = self._read_state()
        self.task_group_id = state.get("task_group_id") or str(uuid.uuid4())
        self._write_state()  # before any submission: a crash from here on can be resumed
        self._serializer = json_results_serializer()
        self._gce = Executor(endpoint_id=self.endpoint_id, client=client,
                             task_group_id=self.task_group_id, batch_size=self.batch_size,
                             serializer=self._serializer, result_serializers=[JSONData()])
        if state.get("task_group_id"):
            await asyncio.to_thread(self._reattach)

    def _read_state(self) -> dict[str, Any]:
        if not self.state_path or not self.state_path.exists():
            return {}
        state = json.loads(self.state_path.read_text())
        if state.get("endpoint_id") != self.endpoint_id:
            raise InputError(f"{self.state_path}: this batch was sent to endpoint "
                             f"{state.get('endpoint_id')}, not {self.endpoint_id}")
        return state

    def _write_state(self) -> None:
        if self.state_path:
            self.state_path.write_text(json.dumps({"endpoint_id": self.endpoint_id,
                                                   "task_group_id": self.task_group_id}))

    @property
    def tasks_path(self) -> Path | None:
        return self.state_path.with_suffix(".tasks") if self.state_path else None

    def _reattach(self) -> None:
        """Futures for the task group's tasks, keyed by the tags recorded at submission."""
        tags: dict[str, str] = {}
        if self.tasks_path and self.tasks_path.exists():
            for line in self.tasks_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    tags[rec["task_id"]] = rec["tag"]
                except (json.JSONDecodeError, KeyError):
                    continue
        if not tags:
            return
        try:
            futures = self._gce.reload_tasks()
        except Exception as exc:
            raise ExecutorError(f"could not reload task group {self.task_group_id} from Globus "
                                f"Compute: {exc}") from None
        for fut in futures:
            tag = tags.get(str(fut.task_id))
            if tag is not None:
                self._reattached[tag] = fut
                self._recorded.add(tag)
        log.info("resume: reattached %d tasks of task group %s", len(self._reattached),
                 self.task_group_id)

    # ------------------------------------------------------------------ tasks
    def submit(self, fn: Callable, *args, tag: str | None = None, **kwargs) -> asyncio.Future:
        """Submit ``fn(*args, **kwargs)``; a ``tag`` already in the reattached task group
        returns that task's future instead of submitting again."""
        if self._gce is None:
            raise ExecutorError("the executor is not initialized; call 'await initialize()'")
        if tag is not None and tag in self._reattached:
            fut = self._reattached.pop(tag)
        else:
            self.check_payload(args, kwargs)
            fut = self._gce.submit(fn, *args, **kwargs)
            if tag is not None:
                with self._lock:
                    self._tagged.append((tag, fut))
        self._submitted += 1
        fut.add_done_callback(self._count)
        aio = asyncio.wrap_future(fut)
        if tag is not None and self.tasks_path and (self._recorder is None
                                                    or self._recorder.done()):
            self._recorder = asyncio.get_running_loop().create_task(self._record_when_known())
        return aio

    def check_payload(self, args: tuple, kwargs: dict) -> None:
        size = len(self._serializer.serialize(list(args))) + \
            len(self._serializer.serialize(kwargs))
        if size > MAX_PAYLOAD_BYTES:
            raise InputError(f"this request is {size / 1e6:.1f} MB once serialized; Globus "
                             f"Compute accepts at most 10 MB per task (shorten the prompt or "
                             f"the history)")

    async def _record_when_known(self) -> None:
        """Append (tag, task id) lines as the SDK learns the task ids from the service; one
        loop serves every submission and ends when nothing is left to record."""
        while True:
            self.record_task_ids()
            with self._lock:
                if not self._tagged:
                    return
            await asyncio.sleep(0.5)

    def record_task_ids(self) -> None:
        with self._lock:
            known = [(tag, f) for tag, f in self._tagged if getattr(f, "task_id", None)]
            self._tagged = [(tag, f) for tag, f in self._tagged
                            if not getattr(f, "task_id", None)]
        lines = [json.dumps({"tag": tag, "task_id": str(f.task_id)}) for tag, f in known
                 if tag not in self._recorded]
        if lines and self.tasks_path:
            with self.tasks_path.open("a") as fh:
                fh.write("\n".join(lines) + "\n")
            self._recorded.update(tag for tag, _ in known)

    def _count(self, fut) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._failed += 1
        else:
            self._done += 1

    async def wait_for_workers(self, minimum: int = 1, timeout: float = 0.0) -> int:
        return 0  # the endpoint manages its workers; there is nothing to wait for here

    def stats(self) -> dict[str, Any]:
        return {"endpoint_id": self.endpoint_id, "task_group_id": self.task_group_id,
                "active_workers": 0, "blocks": 0, "completed_tasks": self._done,
                "failed_tasks": self._failed, "retried_tasks": 0,
                "pending_tasks": self._submitted - self._done - self._failed,
                "submitted_tasks": self._submitted}

    async def shutdown(self) -> None:
        gce, self._gce = self._gce, None
        if self._recorder is not None:
            self._recorder.cancel()
        if gce is not None:
            self.record_task_ids()
            await asyncio.to_thread(gce.shutdown, wait=False, cancel_futures=True)
