"""Tokens from the workers to the driver while an answer is generated.

A Parsl task returns its result once, at the end; a streamed answer needs its text as it
grows. The driver listens on a TCP port of its own (on the address the workers already reach
the interchange on); a request to stream gets an id and the hub's key, the worker connects,
says both, and sends the answer's new text as JSON lines (``{"t": "..."}``) until
``{"done": true}`` (:mod:`hpc_chat.worker.stream`). The result still comes back through Parsl:
the stream only shows it early.

When the one waiting for a stream goes away (an HTTP client that disconnected), the hub
closes that worker's connection; the worker sees it at its next token and stops the answer,
freeing its sequence slot. Connections with a wrong key or an unknown id are closed at once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import uuid
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

HELLO_LIMIT = 4096  # bytes: a hello line longer than this is not one of ours


@dataclass
class Stream:
    """One answer's text as it arrives: ``queue`` holds new pieces, then None at the end."""

    id: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    closed: bool = False


class TokenHub:
    def __init__(self) -> None:
        self.key = secrets.token_hex(16)
        self.address: str | None = None
        self._server: asyncio.AbstractServer | None = None
        self._streams: dict[str, Stream] = {}

    async def start(self, host: str = "127.0.0.1") -> None:
        self._server = await asyncio.start_server(self._connected, host, 0,
                                                  limit=1 << 20)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{host}:{port}"

    async def stop(self) -> None:
        for stream in list(self._streams.values()):
            self.close(stream)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def open(self) -> tuple[Stream, dict[str, str]]:
        """A new stream, and what a worker needs to send to it (goes into the request)."""
        if self.address is None:
            raise RuntimeError("the token hub is not started")
        stream = Stream(uuid.uuid4().hex)
        self._streams[stream.id] = stream
        return stream, {"address": self.address, "id": stream.id, "key": self.key}

    def close(self, stream: Stream) -> None:
        """Nobody waits for this stream any more: its worker is told by a closed connection."""
        stream.closed = True
        self._streams.pop(stream.id, None)

    async def _connected(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        stream = None
        try:
            hello = json.loads(await reader.readline())
            stream = self._streams.get(str(hello.get("id")))
            if stream is None or not hmac.compare_digest(str(hello.get("key")), self.key):
                return
            while not stream.closed:
                line = await reader.readline()
                if not line:
                    break
                message = json.loads(line)
                if message.get("done"):
                    break
                stream.queue.put_nowait(str(message.get("t", "")))
        except (ValueError, AttributeError, OSError, asyncio.LimitOverrunError) as exc:
            log.debug("token stream connection dropped: %s", exc)
        finally:
            if stream is not None:
                stream.queue.put_nowait(None)
            writer.close()
