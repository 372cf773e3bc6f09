"""uvicorn's HTTP protocol with a bound on connections that have not sent a request yet.

On TCP (``serve --host/--port``) every user of the node can connect. uvicorn bounds the
connections it serves (``limit_concurrency``: ``--max-queue`` + 64) and answers 503 beyond it,
but gives a connection that never sends a request no deadline: a few hundred idle connections
would make it answer 503 to everyone, for good. Here a connection must send its first
request's headers within :data:`FIRST_REQUEST_S`, and the connections never come within
:data:`HEADROOM` of uvicorn's bound: when one more would, the one that has waited longest with
nothing sent is pushed out. An idle flood therefore pushes out only itself, and a real client
always finds room. A burst of real clients is served whole: it is pushed out of nothing while
there is room (before, a fixed cap of 32 waiting connections closed a client of a 64-client
burst that had connected and not yet written its request), and a connection whose request has
arrived but not yet been read (``FIONREAD``: asyncio accepts every connection the kernel holds
before it reads from any) is never pushed out. (Behind the Unix socket, the default, only the
user can connect at all.)
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
from collections import OrderedDict

from uvicorn.protocols.http.h11_impl import H11Protocol

FIRST_REQUEST_S = 10.0
HEADROOM = 32  # connections kept free below uvicorn's bound (fewer than run's 64 over the queue)
MAX_WAITING = 32  # the cap on waiting connections when uvicorn is given no bound


class BoundedH11Protocol(H11Protocol):
    """:class:`H11Protocol`, with the deadline and the cap of the module docstring."""

    waiting: OrderedDict[BoundedH11Protocol, None] = OrderedDict()  # one server a process

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.call_later(FIRST_REQUEST_S, self._push_out)
        self.waiting[self] = None
        limit = self.config.limit_concurrency
        excess = len(self.server_state.connections) - (limit - HEADROOM) if limit else \
            len(self.waiting) - MAX_WAITING
        if excess > 0:  # the longest waiting of those with nothing sent
            for conn in [c for c in self.waiting if not c._sent()][:excess]:
                conn._push_out()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:  # a request has come: no longer waiting
            self._served()

    def connection_lost(self, exc: Exception | None) -> None:
        self._served()
        super().connection_lost(exc)

    def _served(self) -> None:
        if self.waiting.pop(self, False) is None:
            self._deadline.cancel()

    def _sent(self) -> bool:
        """Whether bytes from the client wait in the kernel's buffer, not read yet."""
        sock = self.transport.get_extra_info("socket")
        try:
            pending = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (AttributeError, OSError):
            return False
        return struct.unpack("i", pending)[0] > 0

    def _push_out(self) -> None:
        self._served()
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()
