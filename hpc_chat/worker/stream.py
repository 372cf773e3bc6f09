"""The worker's side of a streamed answer: send its text to the driver as it grows.

See :mod:`hpc_chat.tokenstream` for the driver's side. The engines call a sender with the
answer's text so far after each token; it sends what is new, holding back the last few
characters that could still turn out to be the start of a stop string (they are sent when the
answer ends, or never, if they were one). It answers False only when the driver has closed
the connection (the client went away): the engine stops that answer. When the answer is done
its result follows, so the driver need not wait for the rest of its task. A driver that cannot be
reached, or a write that fails, only costs the stream: the answer is computed and returned as
usual. The driver's addresses are tried in order, a second each; an unreachable driver is
remembered for the life of the process, so a batch does not wait for each of its streams.
"""

from __future__ import annotations

import json
import select
import socket

CONNECT_TIMEOUT_S = 1.0
SEND_TIMEOUT_S = 10.0
_unreachable: set[tuple[tuple[str, ...], int]] = set()


def _connect(spec: dict) -> socket.socket | None:
    addresses = tuple(str(a) for a in spec.get("addresses") or ())
    port = int(spec["port"])
    if (addresses, port) in _unreachable:
        return None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S)
        except OSError:
            continue
        sock.settimeout(SEND_TIMEOUT_S)
        return sock
    _unreachable.add((addresses, port))
    return None


def streams_tokens(spec: dict | None) -> bool:
    """Whether a stream wants the text as it grows (a stream opened with ``tokens=False``
    wants only the result)."""
    return bool(spec) and spec.get("tokens", True) is not False


class TokenSender:
    def __init__(self, spec: dict, stops: list[str]):
        self.sent = ""  # the text the driver has
        self.tokens = streams_tokens(spec)
        self.hold = max((len(s) for s in stops if s), default=1) - 1
        self.cancelled = False  # the driver closed the stream: stop generating
        self.sock: socket.socket | None = None
        try:
            self.sock = _connect(spec)
            self._write({"id": spec["id"], "key": spec["key"]})
        except (OSError, KeyError, ValueError, TypeError):
            self.sock = None

    def __call__(self, text: str) -> bool:
        """Hear the text so far; False when nobody listens any more (stop generating)."""
        try:
            self._send(text.lstrip())
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
        self._write({"t": safe[len(self.sent):]})
        self.sent = safe

    def finish(self, final: str | None, result: dict | None = None) -> None:
        """Send what is left of the final answer, the result when given, and end the
        stream."""
        if self.sock is None:
            return
        if self.tokens and final is not None and final.startswith(self.sent) and \
                len(final) > len(self.sent):
            self._write({"t": final[len(self.sent):]})
        if result is not None:
            try:
                self._write({"r": result})
            except (TypeError, ValueError):  # not JSON: it comes with the task's result
                pass
        self._write({"done": True})
        self._drop()

    def _closed_by_driver(self) -> bool:
        """The driver never writes to us: readable means it closed the stream (poll, not
        select: any descriptor number; and no wait: the socket's own timeout would block)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLHUP)
        if not poller.poll(0):
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _write(self, message: dict) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            self._drop()  # no more stream; the answer goes on

    def _drop(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
