"""Tokens from the workers to the driver while an answer is generated.

A Parsl task returns its result once, at the end; a streamed answer needs its text as it grows.
The driver listens on a TCP port of its own; a request to stream gets an id and the hub's key,
the worker connects to one of the driver's addresses, says both, and sends the answer's new
text as JSON lines until the stream's end (:mod:`hpc_chat.worker.stream`; the messages are
declared in :mod:`hpc_chat.protocol.stream`). The result still comes back through Parsl: the
stream only shows it early, and the final result is what counts.

One connection is current per stream: a retried task that connects again replaces the first
attempt's connection (which its worker then sees closed: that attempt stops), and the reader
hears :data:`RESTART`. When the one waiting for a stream goes away (an HTTP client that
disconnected), the hub closes the worker's connection; the worker sees it at its next token and
stops the answer, freeing its sequence slot.

A worker whose request the node engine decoded also sends the answer's result before the end:
the driver takes the first result it gets, so an answer of a micro-batch (several requests in
one Parsl task) is not held until the task's slowest answer ends (:func:`on_result`; the task's
own result, when it comes, is ignored). A stream opened with ``tokens=False`` carries only that
result, not the text as it grows.

The port is open to whoever can reach the address (on a shared compute node, every user of it,
loopback included). So the channel is TLS pinned to a certificate the hub makes when it starts
(:mod:`hpc_chat.util.tls`): the stream's description, which reaches the worker inside its Parsl
task, carries that certificate and a secret of that stream alone. A listener that is not this
hub cannot finish the handshake, and learns nothing; a connection that does not say a stream's
secret within a few seconds, in a short first line, is closed. The hub acknowledges a stream's
connection, or says that it is closed already (its client went away while the request waited):
only those two answers, which only this hub can send, stop an answer. Connections that were
never answered (the hub at its cap of connections that have not said a secret yet, under a
flood) cost the stream, never the answer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpc_chat.protocol.stream import (
    ACKNOWLEDGED,
    CLOSED,
    HELLO_LIMIT,
    End,
    Result,
    StreamSpec,
    Text,
    read_hello,
    read_message,
)
from hpc_chat.util.tls import server_context

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 512
MAX_UNAUTHENTICATED = 64  # connections that have not said a stream's secret yet
RESTART = object()  # put in a stream's queue when a retried attempt takes the stream over
_HUBS: dict[str, TokenHub] = {}  # the hubs of this process, by key: see on_result


@dataclass
class Stream:
    """One answer's text as it arrives: ``queue`` holds new pieces, :data:`RESTART`, and
    None when the current connection ended."""

    id: str
    secret: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    closed: bool = False
    writer: asyncio.StreamWriter | None = None  # the current worker connection
    result_callbacks: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)


def on_result(spec: dict[str, Any] | None, callback: Callable[[dict[str, Any]], None]) -> None:
    """Have ``callback`` hear the answer's result as soon as a worker sends it on the stream
    ``spec`` (from :meth:`TokenHub.open` of this process). Without such a stream here,
    nothing: the result comes with its task only."""
    if not isinstance(spec, dict):
        return
    hub = _HUBS.get(str(spec.get("hub")))
    stream = hub._streams.get(str(spec.get("id"))) if hub is not None else None
    if stream is not None:
        stream.result_callbacks.append(callback)


class LocalSender:
    """A stream fed from this process (a remote model's answer, called by the driver itself),
    with the worker's sender's meaning: :meth:`put` is False once the client went away."""

    def __init__(self, stream: Stream, tokens: bool):
        self.stream, self.tokens = stream, tokens

    def put(self, piece: str) -> bool:
        if self.stream.closed:
            return False
        self.stream.queue.put_nowait(piece)
        return True

    def finish(self) -> None:
        if not self.stream.closed:
            self.stream.queue.put_nowait(None)  # as a worker's connection ending


def local_stream(spec: dict[str, Any] | None) -> LocalSender | None:
    """The stream ``spec`` names (from :meth:`TokenHub.open` of this process), to be fed
    here; None when it is not this process's."""
    if not isinstance(spec, dict):
        return None
    hub = _HUBS.get(str(spec.get("hub")))
    stream = hub._streams.get(str(spec.get("id"))) if hub is not None else None
    if stream is None or not hmac.compare_digest(str(spec.get("secret")).encode(),
                                                 stream.secret.encode()):
        return None
    return LocalSender(stream, bool(spec.get("tokens", True)))


class TokenHub:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex  # names this hub in its streams' descriptions (not secret)
        self._tls, self.certificate = server_context()
        self._unauthenticated = 0
        self.addresses: list[str] = []
        self.port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._streams: dict[str, Stream] = {}
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, bind: str, addresses: list[str]) -> None:
        """Listen on ``bind``; workers are told to try ``addresses`` in order."""
        # Plain TCP first: a connection is counted against the caps before its TLS handshake
        # (done in _connected), so handshakes cannot pile up beyond them.
        self._server = await asyncio.start_server(self._connected, bind, 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        self.addresses = addresses
        _HUBS[self.id] = self

    async def stop(self) -> None:
        _HUBS.pop(self.id, None)
        for stream in list(self._streams.values()):
            self.close(stream)
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            self._server = None

    def open(self, tokens: bool = True) -> tuple[Stream, dict]:
        """A new stream, and what a worker needs to send to it (goes into the request).
        ``tokens=False``: the worker sends only the result, not the text as it grows."""
        if self.port is None:
            raise RuntimeError("the token hub is not started")
        stream = Stream(uuid.uuid4().hex)
        self._streams[stream.id] = stream
        return stream, StreamSpec(addresses=self.addresses, port=self.port, id=stream.id,
                                  secret=stream.secret, hub=self.id,
                                  certificate=self.certificate, tokens=tokens).model_dump()

    def close(self, stream: Stream) -> None:
        """Nobody waits for this stream any more: its worker is told by a closed connection."""
        stream.closed = True
        self._streams.pop(stream.id, None)
        if stream.writer is not None:
            stream.writer.close()

    async def _connected(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS or \
                self._unauthenticated >= MAX_UNAUTHENTICATED:
            writer.close()  # never acknowledged: the worker keeps answering, without a stream
            return
        self._writers.add(writer)
        self._unauthenticated += 1
        stream = None
        try:
            try:
                async with asyncio.timeout(HELLO_TIMEOUT_S):  # handshake and hello together
                    await writer.start_tls(self._tls)
                    hello = await reader.readline()
            finally:
                self._unauthenticated -= 1
            if len(hello) > HELLO_LIMIT:
                return
            hello = read_hello(hello)
            stream = self._streams.get(hello.id)
            if stream is None:  # closed: its client went away before the worker got here
                writer.write(CLOSED)
                await writer.drain()
                return
            if not hmac.compare_digest(hello.secret.encode(), stream.secret.encode()):
                stream = None
                return
            if stream.writer is not None:  # a retried attempt takes over
                stream.writer.close()
                stream.queue.put_nowait(RESTART)
            stream.writer = writer
            writer.write(ACKNOWLEDGED)  # from now on, closing it stops the answer
            await writer.drain()
            while not stream.closed and stream.writer is writer:
                line = await reader.readline()
                if not line:
                    break
                message = read_message(line)
                if isinstance(message, End):
                    break
                if stream.writer is not writer:
                    continue
                if isinstance(message, Result):
                    for callback in stream.result_callbacks:
                        callback(message.r)
                elif isinstance(message, Text):
                    stream.queue.put_nowait(message.t)
        except (ValueError, AttributeError, OSError, asyncio.TimeoutError, RecursionError,
                asyncio.LimitOverrunError) as exc:
            log.debug("token stream connection dropped: %s", exc)
        finally:
            if stream is not None and stream.writer is writer:
                stream.writer = None
                stream.queue.put_nowait(None)
            self._writers.discard(writer)
            writer.close()
