"""What every engine offers its callers: the worker's answer logic, the node engine and the
registry use these members and no others, so the llama.cpp engines and the echo engines are
interchangeable behind them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from hpc_chat.llm.feed import Feed
from hpc_chat.protocol.request import Completion, GenRequest


class Engine(Protocol):
    """A loaded model answering one request at a time (:class:`~hpc_chat.llm.engine.ChatEngine`,
    :class:`~hpc_chat.llm.echo.EchoEngine`)."""

    spec: object  # the ModelSpec it was loaded for
    n_threads: int
    load_s: float
    calls: int

    def count_tokens(self, text: str) -> int: ...

    def complete(self, req: GenRequest, *, loaded_now: bool = False,
                 on_text: Callable[[str], bool] | None = None) -> Completion: ...


class BatchEngine(Protocol):
    """Continuous batching over a loaded model (:class:`~hpc_chat.llm.batched.BatchedEngine`,
    :class:`~hpc_chat.llm.echo.EchoBatchedEngine`)."""

    engine: Engine
    n_seq: int  # the most sequences it holds
    n_holders: int  # sequences that hold cached prompt chunks beside them
    n_ctx_seq: int
    template_stops: list[str]  # what the chat template stops on besides a request's own
    lock: threading.Lock

    @property
    def cap(self) -> int:
        """How many of its sequences it runs now (a trial may widen it while requests wait,
        and settle back: :mod:`hpc_chat.llm.slots`)."""
        ...

    def generate(self, requests: list[GenRequest],
                 on_text: list | None = None) -> list[Completion | Exception]: ...

    def run(self, feed: Feed) -> None: ...

    def close(self) -> None: ...
