"""The worker's side of a streamed answer: send its text to the driver as it grows.

See :mod:`hpc_chat.tokenstream` for the driver's side. The engines call a sender with the
answer's text so far after each token; it sends what is new, holding back the last few
characters that could still turn out to be the start of a stop string (they are sent when the
answer ends, or never, if they were one). It answers False when the driver has closed the
connection (the client went away): the engine stops that answer. A driver that cannot be
reached only costs the stream: the answer is computed and returned as usual.
"""

from __future__ import annotations

import json
import select
import socket


class TokenSender:
    def __init__(self, spec: dict, stops: list[str]):
        self.sent = ""  # the text the driver has
        self.hold = max((len(s) for s in stops if s), default=1) - 1
        self.alive = True
        self.sock: socket.socket | None = None
        try:
            host, port = str(spec["address"]).rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)), timeout=10)
            self._write({"id": spec["id"], "key": spec["key"]})
        except (OSError, KeyError, ValueError):
            self.sock, self.alive = None, False

    def __call__(self, text: str) -> bool:
        """Hear the text so far; False when nobody listens any more (stop generating)."""
        text = text.lstrip()
        safe = text[:max(len(self.sent), len(text) - self.hold)]
        if self.sock is not None and len(safe) > len(self.sent) and safe.startswith(self.sent):
            if self._closed_by_driver():
                self.alive = False
            else:
                self._write({"t": safe[len(self.sent):]})
                self.sent = safe
        return self.alive or self.sock is None  # no stream: generate as usual

    def finish(self, final: str | None) -> None:
        """Send what is left of the final answer and end the stream."""
        if self.sock is None:
            return
        if final is not None and final.startswith(self.sent) and len(final) > len(self.sent):
            self._write({"t": final[len(self.sent):]})
        self._write({"done": True})
        try:
            self.sock.close()
        finally:
            self.sock = None

    def _closed_by_driver(self) -> bool:
        """The driver never writes to us: anything readable means the connection closed."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable) and not self.sock.recv(1)
        except OSError:
            return True

    def _write(self, message: dict) -> None:
        if self.sock is None or not self.alive:
            return
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            self.alive = False
