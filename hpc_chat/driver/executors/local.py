"""Threads in this process instead of workers: for debugging (no Parsl, no isolation)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from hpc_chat.driver.executors.base import ExecutorConfig, WithoutBlocks
from hpc_chat.errors import ExecutorError
from hpc_chat.worker.tasks import chat_task


class LocalExecutor(WithoutBlocks):
    """Threads in this process; for debugging only (no Parsl, no isolation)."""

    chat_function = staticmethod(chat_task)
    supports_batching = True

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

    async def wait_for_workers(self, minimum: int = 1, timeout: float = 0.0) -> int:
        return self.config.max_workers if self._pool else 0

    def submit(self, fn: Callable, *args, tag: str | None = None,
               **kwargs) -> asyncio.Future:
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
