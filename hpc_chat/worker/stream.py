"""The worker's side of a streamed answer: send its text to the driver as it grows.

See :mod:`hpc_chat.driver.token_hub` for the driver's side. The engines call a sender with the
answer's text so far after each token; it sends what is new, holding back the last few
characters that could still turn out to be the start of a stop string (they are sent when the
answer ends, or never, if they were one). It answers False only when the driver has closed
the connection (the client went away): the engine stops that answer. When the answer is done
its result follows, so the driver need not wait for the rest of its task. A driver that cannot be
reached, or a write that fails, only costs the stream: the answer is computed and returned as
usual. The driver's addresses are tried in order, a second each; an unreachable driver is
remembered for the life of the process, so a batch does not wait for each of its streams.

Each connection is TLS, trusting only the hub's own certificate from the stream's description
(:mod:`hpc_chat.util.tls`): an address where something else listens (another user's program on
this node's loopback) fails the handshake and the next address is tried, before anything is
sent. Only after the hub has acknowledged the stream's secret does a closed connection mean
"stop": a connection the hub refused (at its cap, under a flood) only costs the stream.
"""

from __future__ import annotations

import select
import socket
import ssl

from pydantic import BaseModel

from hpc_chat.protocol.stream import (
    ACKNOWLEDGED,
    CLOSED,
    End,
    Hello,
    Result,
    StreamSpec,
    Text,
    line,
)
from hpc_chat.util.tls import client_context

CONNECT_TIMEOUT_S = 1.0
HELLO_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 10.0
_unreachable: set[tuple[tuple[str, ...], int]] = set()


STOP = "stop"  # what _connect returns when the hub says the stream is closed already


def _connect(spec: StreamSpec) -> ssl.SSLSocket | str | None:
    """A TLS connection to the hub, its stream acknowledged; :data:`STOP` when the hub says
    the stream is closed (its client is gone); None when no address gives either."""
    addresses, port = tuple(spec.addresses), spec.port
    if (addresses, port) in _unreachable:
        return None
    tls = client_context(spec.certificate)
    hello = line(Hello(id=spec.id, secret=spec.secret))
    refused = False
    for address in addresses:
        try:
            raw = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S)
        except OSError:
            continue
        try:
            raw.settimeout(HELLO_TIMEOUT_S)
            sock = tls.wrap_socket(raw)  # not the hub's certificate: ssl.SSLError
            sock.sendall(hello)
            answer = sock.recv(64)
            if answer == CLOSED:
                sock.close()
                return STOP
            if answer != ACKNOWLEDGED:
                raise ConnectionError("the hub did not acknowledge the stream")
        except (OSError, ValueError):  # ssl.SSLError is an OSError
            raw.close()
            refused = True
            continue
        sock.settimeout(SEND_TIMEOUT_S)
        return sock
    if not refused:  # nothing listens there: do not wait for it again in this process
        _unreachable.add((addresses, port))
    return None


def streams_tokens(spec: StreamSpec | None) -> bool:
    """Whether a stream wants the text as it grows (a stream opened with ``tokens=False``
    wants only the result)."""
    return spec is not None and spec.tokens


class TokenSender:
    """Sends an answer's text as it grows. A chat answer's leading whitespace is dropped, as
    its final text is stripped; a text completion's (``strip=False``) is part of it."""

    def __init__(self, spec: StreamSpec | dict, stops: list[str], *, strip: bool = True):
        self.strip = strip
        self.sent = ""  # the text the driver has
        self.cancelled = False  # the driver closed the stream: stop generating
        self.sock: ssl.SSLSocket | None = None
        self.hold = max((len(s) for s in stops if s), default=1) - 1
        try:
            spec = StreamSpec.model_validate(spec)
            self.tokens = spec.tokens
            found = _connect(spec)
        except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
            self.tokens, found = False, None
        if found == STOP:
            self.cancelled = True  # nobody waits for this answer any more
        elif found is not None:
            self.sock = found

    def __call__(self, text: str) -> bool:
        """Hear the text so far; False when nobody listens any more (stop generating)."""
        try:
            self._send(text.lstrip() if self.strip else text)
        except Exception:  # noqa: BLE001 - a stream must never fail the answer
            self._drop()
        return not self.cancelled

    def _send(self, text: str) -> None:
        safe = text[:max(len(self.sent), len(text) - self.hold)]
        if self.sock is None or not self.tokens or len(safe) <= len(self.sent) or \
                not safe.startswith(self.sent):
            return
        if self._closed_by_driver():
            self.cancelled = True
            self._drop()
            return
        self._write(Text(t=safe[len(self.sent):]))
        self.sent = safe

    def finish(self, final: str | None, result: dict | None = None) -> None:
        """Send what is left of the final answer, the result when given, and end the
        stream."""
        if self.sock is None:
            return
        if self.tokens and final is not None and final.startswith(self.sent) and \
                len(final) > len(self.sent):
            self._write(Text(t=final[len(self.sent):]))
        if result is not None:
            try:
                self._write(Result(r=result))
            except ValueError:  # not JSON: it comes with the task's result
                pass
        self._write(End())
        self._drop()

    def _closed_by_driver(self) -> bool:
        """After its acknowledgement the hub never writes to us: readable means it closed the
        stream (poll, not select: any descriptor number; then a read that cannot wait: TLS
        may have only a record of its own to read, which is not a close)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLHUP)
        if not poller.poll(0) and not self.sock.pending():
            return False
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1) == b""
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except OSError:
            return True
        finally:
            if self.sock is not None:
                self.sock.settimeout(SEND_TIMEOUT_S)

    def _write(self, message: BaseModel) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendall(line(message))
        except OSError:
            self._drop()  # no more stream; the answer goes on

    def _drop(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
