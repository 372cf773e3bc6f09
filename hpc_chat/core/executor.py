"""The seed's ``ParslExecutor``: submit Python functions to Parsl and await them from asyncio.

Each executor owns its own Parsl ``DataFlowKernel`` (never the global one that ``parsl.load``
manages), so several workflows in one process do not fight over Parsl, and ``shutdown()`` stops
exactly what ``initialize()`` started: the interchange, the worker pools and the blocks.

A ``local`` executor (threads in this process, no Parsl) exists for debugging. It is never a
silent fallback: when Parsl fails to start, the user gets an :class:`ExecutorError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpc_chat.errors import ExecutorError

log = logging.getLogger(__name__)


class ExecutorConfig(BaseModel):
    """How tasks run: ``parsl`` (default) or ``local`` (in-process threads, for debugging)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    executor_type: Literal["parsl", "local"] = "parsl"
    max_workers: int = Field(4, ge=1)
    timeout: float = Field(300, gt=0)
    # A ready parsl.config.Config (from a site profile); None builds the local one.
    parsl_config: Any = None


class ParslExecutor:
    """Parsl behind an asyncio interface."""

    def __init__(self, config: ExecutorConfig | None = None, *, parsl_config: Any = None):
        self.config = config or ExecutorConfig()
        self.parsl_config = parsl_config or self.config.parsl_config
        self.dfk = None
        self._apps: dict[Callable, Any] = {}

    @property
    def started(self) -> bool:
        return self.dfk is not None

    async def initialize(self) -> None:
        """Start the DataFlowKernel and its executors (workers start in the background)."""
        if self.dfk is not None:
            return
        from hpc_chat.apps.config import ensure_driver_path, get_local_config

        ensure_driver_path()
        config = self.parsl_config or get_local_config(self.config.max_workers)
        try:
            self.dfk = await asyncio.to_thread(_start_dfk, config)
        except Exception as exc:  # Parsl raises many kinds; the user needs the reason
            raise ExecutorError(f"Parsl failed to start: {type(exc).__name__}: {exc}") from exc
        self.parsl_config = config

    def submit(self, fn: Callable, *args, **kwargs) -> asyncio.Future:
        """Run ``fn(*args, **kwargs)`` on a worker; the result is awaitable without blocking."""
        if self.dfk is None:
            raise ExecutorError("the executor is not initialized; call 'await initialize()'")
        from parsl.app.python import PythonApp

        app = self._apps.get(fn)
        if app is None:
            app = self._apps[fn] = PythonApp(fn, data_flow_kernel=self.dfk)
        return asyncio.wrap_future(app(*args, **kwargs))

    def htex(self):
        """The first HighThroughputExecutor, if any (for worker and block statistics)."""
        if self.dfk is None:
            return None
        for ex in self.dfk.executors.values():
            if hasattr(ex, "connected_managers"):
                return ex
        return None

    def stats(self) -> dict[str, Any]:
        """Workers, blocks and task counts as Parsl sees them now."""
        from parsl.dataflow.states import States

        if self.dfk is None:
            return {"active_workers": 0, "pending_tasks": 0, "completed_tasks": 0,
                    "failed_tasks": 0, "retried_tasks": 0, "blocks": 0, "connected_blocks": 0}
        counts = dict(self.dfk.task_state_counts)
        pending = sum(counts.get(s, 0) for s in (States.pending, States.launched,
                                                 States.running, States.fail_retryable))
        out = {
            "pending_tasks": pending,
            "completed_tasks": counts.get(States.exec_done, 0),
            "failed_tasks": counts.get(States.failed, 0) + counts.get(States.dep_fail, 0),
            "retried_tasks": sum(rec.get("fail_count", 0) for rec in self.dfk.tasks.values()),
            "submitted_tasks": self.dfk.task_count,
            "active_workers": 0, "managers": 0, "blocks": 0, "connected_blocks": 0,
            "outstanding": 0,
        }
        ex = self.htex()
        if ex is not None:
            try:
                managers = ex.connected_managers()
                out["active_workers"] = sum(m["worker_count"] for m in managers if m["active"])
                out["managers"] = len(managers)
                out["connected_blocks"] = len({m["block_id"] for m in managers})
                out["outstanding"] = ex.outstanding
            except Exception as exc:  # the interchange may be gone during shutdown
                log.debug("could not query the interchange: %s", exc)
            out["blocks"] = len(ex.blocks_to_job_id)
            out["job_ids"] = list(ex.blocks_to_job_id.values())
        return out

    async def shutdown(self) -> None:
        """Stop the kernel, the interchange and every worker this executor started."""
        dfk, self.dfk = self.dfk, None
        self._apps.clear()
        if dfk is not None:
            await asyncio.to_thread(dfk.cleanup)


class LocalExecutor:
    """Threads in this process; for debugging only (no Parsl, no isolation)."""

    def __init__(self, config: ExecutorConfig | None = None):
        self.config = config or ExecutorConfig(executor_type="local")
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._done = self._failed = 0

    @property
    def started(self) -> bool:
        return self._pool is not None

    async def initialize(self) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.config.max_workers)

    def submit(self, fn: Callable, *args, **kwargs) -> asyncio.Future:
        if self._pool is None:
            raise ExecutorError("the executor is not initialized; call 'await initialize()'")
        fut = self._pool.submit(fn, *args, **kwargs)
        fut.add_done_callback(self._count)
        return asyncio.wrap_future(fut)

    def _count(self, fut: concurrent.futures.Future) -> None:
        if fut.exception() is None:
            self._done += 1
        else:
            self._failed += 1

    def stats(self) -> dict[str, Any]:
        return {"active_workers": self.config.max_workers if self._pool else 0,
                "pending_tasks": self._pool._work_queue.qsize() if self._pool else 0,
                "completed_tasks": self._done, "failed_tasks": self._failed,
                "retried_tasks": 0, "blocks": 0, "connected_blocks": 0}

    async def shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)


def create_executor(config: ExecutorConfig) -> ParslExecutor | LocalExecutor:
    if config.executor_type == "local":
        return LocalExecutor(config)
    return ParslExecutor(config)


def _start_dfk(config):
    from parsl.dataflow.dflow import DataFlowKernel

    return DataFlowKernel(config)
