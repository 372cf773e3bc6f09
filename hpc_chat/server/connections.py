"""uvicorn's HTTP protocol with a bound on connections that have not sent a request yet.

On TCP (``serve --host/--port``) every user of the node can connect. uvicorn bounds the
connections it serves (``limit_concurrency``) but gives a connection that never sends a
request no deadline: a few hundred idle connections would make it answer 503 to everyone, for
good. Here a connection must send its first request's headers within
:data:`FIRST_REQUEST_S`, and at most :data:`MAX_WAITING` connections may be waiting for theirs
at once: a new one pushes out the one that has waited longest with nothing sent. A real client
sends its request as soon as it connects, so it waits for milliseconds; an idle flood pushes out
only itself. A connection whose request has arrived but not yet been read is never pushed out:
when the server is busy, asyncio accepts every connection the kernel holds in one go before it
reads from any, so a burst of real clients is all "waiting" at once, each with its request in
the kernel's buffer (``FIONREAD``). (Behind the Unix socket, the default, only the user can
connect at all.)
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
from collections import OrderedDict

from uvicorn.protocols.http.h11_impl import H11Protocol

FIRST_REQUEST_S = 10.0
MAX_WAITING = 32  # fewer than run.CONNECTIONS_OVER_QUEUE: waiting ones never reach the limit


class BoundedH11Protocol(H11Protocol):
    """:class:`H11Protocol`, with the deadline and the cap of the module docstring."""

    waiting: OrderedDict[BoundedH11Protocol, None] = OrderedDict()  # one server a process

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.call_later(FIRST_REQUEST_S, self._push_out)
        self.waiting[self] = None
        excess = len(self.waiting) - MAX_WAITING
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
