"""The executor interface: what the workflow needs from wherever chat tasks run.

Like submitit's ``Executor``, the interface is written down once, and each place tasks can run
implements it: Parsl workers (:mod:`hpc_chat.driver.executors.parsl`), threads in this process
(:mod:`hpc_chat.driver.executors.local`) and a Globus Compute endpoint
(:mod:`hpc_chat.driver.executors.globus`). :func:`hpc_chat.driver.executors.factory.make_executor`
picks one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


@runtime_checkable
class ChatExecutor(Protocol):
    """Runs plain functions on workers and reports on them.

    ``chat_function`` is what answers one request there (its call shape is that of
    :func:`hpc_chat.worker.tasks.chat_task`); ``supports_batching`` says whether the executor
    may also be given :func:`hpc_chat.worker.tasks.chat_batch_task` (several requests decoded
    together). ``scheduler`` says who runs its blocks (``slurm``, ``pbspro``, ``local`` for
    processes), None for an executor without blocks whose start can be followed (threads of
    this process, a Globus Compute endpoint); ``block_output`` names the files a block's
    workers print to, and ``htex`` is Parsl's HighThroughputExecutor where there is one (its
    addresses, its workers): callers ask these, never probe for members.
    """

    chat_function: Callable[..., dict]
    supports_batching: bool

    @property
    def scheduler(self) -> str | None: ...

    def block_output(self, job_id: str) -> list[str]: ...

    def htex(self) -> Any | None: ...

    async def initialize(self) -> None: ...

    def submit(self, fn: Callable, *args, tag: str | None = None,
               **kwargs) -> asyncio.Future: ...

    async def wait_for_workers(self, minimum: int = 1, timeout: float = 120.0) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    async def shutdown(self) -> None: ...


class WithoutBlocks:
    """The block members of an executor whose tasks run in no blocks that can be followed
    while they start (threads of this process, a Globus Compute endpoint)."""

    scheduler = None

    def block_output(self, job_id: str) -> list[str]:
        return []

    def htex(self) -> None:
        return None


class ExecutorConfig(BaseModel):
    """How tasks run: ``parsl`` (default) or ``local`` (in-process threads, for debugging)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    executor_type: Literal["parsl", "local"] = "parsl"
    max_workers: int = Field(4, ge=1)
    timeout: float = Field(300, gt=0)
    # A ready parsl.config.Config (from a site profile); None: the local site's.
    parsl_config: Any = None
