"""The CLI's side of a running server: find it, ask it.

``hpc-chat status --server`` shows a running server's state; ``hpc-chat ask`` answers from
a running ``hpc-chat serve`` (warm workers, no start-up) when
there is one: given with ``--server URL`` (or ``$HPC_CHAT_SERVER``), or found through
``$HPC_CHAT_HOME/server/server.json`` when the process that wrote it still runs on this host
and the command did not choose a site, endpoint or config of its own. It says which it did.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any

from hpc_chat.errors import HpcChatError
from hpc_chat.server.auth import ENV, key_file
from hpc_chat.server.run import server_file

TIMEOUT_S = 3600.0


class ServerError(HpcChatError):
    """The server answered with an error (its message is the reason)."""


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
        raise ServerError(f"no API key for the server: set ${ENV} or keep {key_file()} "
                          f"({exc.strerror})") from None


def complete(url: str, body: dict[str, Any], conversation: str | None = None) -> dict:
    """POST /chat/completions; the completion, or :class:`ServerError` with the server's
    message. An unreachable server raises :class:`ConnectionError`."""
    return _call(url, urllib.request.Request(
        f"{url.rstrip('/')}/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key()}",
                 **({"X-Conversation-Id": conversation} if conversation else {})}))


def server_status(url: str) -> dict:
    """GET /status (what ``hpc-chat status --server`` shows): the server's stage, its blocks
    with their scheduler states, workers, model, requests, tokens/s."""
    return _call(url, urllib.request.Request(f"{url.rstrip('/')}/status", headers={
        "Authorization": f"Bearer {api_key()}"}), timeout=60)


def _call(url: str, request: urllib.request.Request, timeout: float = TIMEOUT_S) -> dict:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise ServerError(f"the server at {url} answered {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"the server at {url} cannot be reached: "
                              f"{getattr(exc, 'reason', exc)}") from None
