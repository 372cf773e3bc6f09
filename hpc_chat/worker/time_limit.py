"""A task's time limit (``performance.timeout_seconds``), kept by the task itself.

Parsl's own ``walltime`` throws ``AppTimeout`` into the worker's thread from a timer thread
(``PyThreadState_SetAsyncExc``). That exception lands wherever the thread happens to be when it
next runs Python, and CPython looks the thread up by its id: a thread being started has, for a
moment, its creator's id, so the exception can go to the new thread instead, which dies before
it reports that it started, and the task waits for it for ever. A worker stopped (SIGSTOP,
swapping) while it started its connection threads woke with its timer already due and hung so
(seen in CI: one request of a batch never answered; ``py-spy`` showed the task in
``Thread.start``). The exception can also land after the task returned, in Parsl's worker loop.

So the driver sends ``time_limit`` instead of ``walltime``, no exception is ever thrown into a
thread, and the task keeps its limit where it waits. A request decoded by the node engine fails
with :class:`~hpc_chat.errors.TaskTimeout` when its answer has not been received by the deadline
(``engine_client`` checks in its wait loop and when each answer arrives), and its connection is
closed so the engine stops that answer. An answer decoded in the worker's own process
(``model.engine: worker``) is stopped at its next token once the limit has run out (the
batched engine's ``on_text``, :func:`watch`; the unbatched engine's ``until``, which llama.cpp
checks as a stopping criterion, :func:`stopper`) and the task fails the same way; the model's
load there and an embedding (one llama.cpp call) cannot be stopped half-way and fail when they
end late.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from hpc_chat.errors import TaskTimeout

Limit = tuple[float, float] | None  # (monotonic deadline, the limit in seconds), or no limit
_deadline: ContextVar[Limit] = ContextVar("hpc_chat_deadline", default=None)


@contextmanager
def limited(seconds: float | None) -> Iterator[None]:
    """Run the body under a limit of ``seconds`` (None: no limit). The deadline belongs to
    this thread's context, so tasks in threads of one process (the local executor) each
    keep their own."""
    token = _deadline.set((time.monotonic() + seconds, seconds) if seconds else None)
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline() -> Limit:
    """``(monotonic deadline, limit in seconds)`` of the running task, or None. Read it in
    the task's own thread and hand it to helper threads (they do not share its context)."""
    return _deadline.get()


def left(limit: Limit) -> float | None:
    """Seconds before ``limit`` (from :func:`deadline`) runs out; None for no limit."""
    return None if limit is None else limit[0] - time.monotonic()


def check(limit: Limit) -> None:
    """Raise :class:`TaskTimeout` when ``limit`` has run out."""
    if passed(limit):
        raise timed_out(limit)


def timed_out(limit: tuple[float, float]) -> TaskTimeout:
    return TaskTimeout(f"timed out after {limit[1]:g} s (performance.timeout_seconds)")


def in_process() -> Limit:
    """The running task's limit for decoding in this process, which exists only in a Parsl
    worker (``model.engine: worker``; threads of the driver, the local executor, decode
    without one, as they always have)."""
    return deadline() if "PARSL_WORKER_RANK" in os.environ else None


def passed(limit: Limit) -> bool:
    return limit is not None and time.monotonic() >= limit[0]


def stopper(limit: Limit) -> Callable[[], bool] | None:
    """An unbatched engine's ``until``: True once ``limit`` has run out (it stops the answer
    at its next token without streaming it); None for no limit."""
    return None if limit is None else (lambda: passed(limit))


def watch(limit: Limit, listener: Callable[[str], bool] | None) -> Callable[[str], bool] | None:
    """An engine's ``on_text`` for an answer decoded in this process: the stream's own
    ``listener`` (when there is one), and False, which stops the answer at its next token,
    once ``limit`` has run out. None when there is nothing to hear."""
    if limit is None:
        return listener

    def on_text(text: str) -> bool:
        return not passed(limit) and (listener is None or listener(text))
    return on_text
