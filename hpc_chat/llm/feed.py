"""The requests a running decode loop takes in: one queue, whoever fills it.

A batched engine (:mod:`hpc_chat.llm.batched`, :mod:`hpc_chat.llm.echo`) decodes from a
:class:`Feed`. ``generate`` fills one, closes it and runs the loop until it is empty (one
task's requests). A node engine (:mod:`hpc_chat.worker.node_engine`) keeps one open for its
life: requests from every worker on the node join the same loop as sequence slots free up,
which is what makes the batching continuous across tasks. The loop blocks on the feed only
when it has nothing to decode.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hpc_chat.protocol.request import GenRequest


@dataclass
class Job:
    """One request for the loop; ``done`` hears its completion or its exception, once."""

    req: GenRequest
    done: Callable[[object], None]
    on_text: Callable[[str], bool] | None = None  # the text so far; False stops the answer
    cancelled: threading.Event = field(default_factory=threading.Event)

    def listen(self, text: str) -> bool:
        """What the loop calls after each token: False once the answer is no longer wanted."""
        if self.cancelled.is_set():
            return False
        return self.on_text is None or bool(self.on_text(text))


class Feed:
    """A thread-safe queue of :class:`Job` that can be closed (the loop then ends when idle)."""

    def __init__(self, jobs: list[Job] | None = None):
        self._jobs: deque[Job] = deque(jobs or [])
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the decode loop has stopped")
            self._jobs.append(job)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, limit: int, *, block: bool) -> list[Job]:
        """Up to ``limit`` waiting jobs, skipping cancelled ones. With ``block`` wait until
        there is one, or the feed is closed (then ``[]``: the loop may end)."""
        taken: list[Job] = []
        dropped: list[Job] = []
        with self._cond:
            while block and not self._jobs and not self._closed:
                self._cond.wait()
            while self._jobs and len(taken) < limit:
                job = self._jobs.popleft()
                (dropped if job.cancelled.is_set() else taken).append(job)
        for job in dropped:  # told outside the lock: a listener may take locks of its own
            job.done(RuntimeError("cancelled before it started"))
        return taken

    def waiting(self) -> int:
        with self._cond:
            return len(self._jobs)

    def drain(self, error: BaseException) -> None:
        """Fail every waiting job (the loop cannot go on) and refuse new ones."""
        with self._cond:
            self._closed = True
            jobs, self._jobs = list(self._jobs), deque()
        for job in jobs:
            job.done(error)

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed and not self._jobs
