"""The CLI's side of a running server: find it, ask it, stream from it, send it a batch.

``hpc-chat ask``, ``chat`` and ``batch`` answer from a running ``hpc-chat serve`` (warm
workers, no start-up) when there is one: given with ``--server URL`` (or
``$HPC_CHAT_SERVER``), or found through ``$HPC_CHAT_HOME/server/server.json`` when the process
that wrote it still runs on this host and the command did not choose a site, endpoint or
config of its own (:mod:`hpc_chat.cli.remote` decides and says which it did).
``hpc-chat status --server`` shows a running server's state.

Plain ``urllib``: a request a thread, so a batch keeps many in flight without an event loop,
and a stream is read line by line as the server sends it.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from hpc_chat.errors import HpcChatError
from hpc_chat.server.auth import ENV, key_file
from hpc_chat.server.run import server_file

TIMEOUT_S = 3600.0


class ServerError(HpcChatError):
    """The server answered with an error: ``status`` and ``code`` as it sent them, ``reason``
    its message, ``retry_after`` its Retry-After (seconds) when it sent one."""

    def __init__(self, url: str, status: int, reason: str, code: str | None = None,
                 retry_after: float | None = None):
        super().__init__(f"the server at {url} answered {status}: {reason}")
        self.status, self.reason, self.code, self.retry_after = status, reason, code, \
            retry_after


def running_server() -> str | None:
    """The URL of this user's server on this host, if it still runs."""
    try:
        info = json.loads(server_file().read_text())
        pid, host, url = int(info["pid"]), info["host"], str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return url


def api_key() -> str:
    if os.environ.get(ENV):
        return os.environ[ENV]
    try:
        return key_file().read_text().strip()
    except OSError as exc:
        raise HpcChatError(f"no API key for the server: set ${ENV} or keep {key_file()} "
                           f"({exc.strerror})") from None


def _headers(conversation: str | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {api_key()}",
            **({"X-Conversation-Id": conversation} if conversation else {})}


def complete(url: str, body: dict[str, Any], conversation: str | None = None) -> dict:
    """POST /chat/completions; the completion, or :class:`ServerError` with the server's
    message. An unreachable server raises :class:`ConnectionError`."""
    return _call(url, urllib.request.Request(
        f"{url.rstrip('/')}/chat/completions", data=json.dumps(body).encode(),
        headers=_headers(conversation)))


def stream(url: str, body: dict[str, Any], conversation: str | None = None
           ) -> Iterator[dict[str, Any]]:
    """POST /chat/completions with ``stream: true``; yields each chunk as the server sends
    it. An error event raises :class:`ServerError`. Closing the generator (Ctrl-C) closes
    the connection, which stops the answer at the server and frees its slot."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/chat/completions",
        data=json.dumps({**body, "stream": True,
                         "stream_options": {"include_usage": True}}).encode(),
        headers=_headers(conversation))
    answer = _open(url, request, TIMEOUT_S)
    with answer:
        for raw in answer:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            if "error" in event:
                error = event["error"] or {}
                raise ServerError(url, 500, str(error.get("message")), error.get("code"))
            yield event


def models(url: str) -> list[dict[str, Any]]:
    """GET /models: what the server answers (its agents and ``auto``), each with its ``id``
    and what it runs."""
    return _call(url, urllib.request.Request(f"{url.rstrip('/')}/models", headers=_headers()),
                 timeout=60)["data"]


def server_status(url: str) -> dict:
    """GET /status (what ``hpc-chat status --server`` shows): the server's stage, its blocks
    with their scheduler states, workers, model, requests, tokens/s."""
    return _call(url, urllib.request.Request(f"{url.rstrip('/')}/status",
                                             headers=_headers()), timeout=60)


def _call(url: str, request: urllib.request.Request, timeout: float = TIMEOUT_S) -> dict:
    with _open(url, request, timeout) as answer:
        return json.loads(answer.read())


def _open(url: str, request: urllib.request.Request, timeout: float):
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())["error"]
            message, code = str(error["message"]), error.get("code")
        except (ValueError, KeyError, TypeError):
            message, code = str(exc.reason), None
        try:
            retry = float(exc.headers.get("Retry-After") or "")
        except ValueError:
            retry = None
        raise ServerError(url, exc.code, message, code, retry) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"the server at {url} cannot be reached: "
                              f"{getattr(exc, 'reason', exc)}") from None
