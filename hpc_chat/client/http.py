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

import http.client
import ipaddress
import json
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from hpc_chat.client.files import ENV, key_file, server_file
from hpc_chat.errors import HpcChatError
from hpc_chat.util.paths import user_name

TIMEOUT_S = 3600.0
WAIT_CAP_S = 30.0  # the longest wait between tries while the server is busy or not ready


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


def text_completion(url: str, body: dict[str, Any]) -> dict:
    """POST /completions; the ``text_completion``, or :class:`ServerError`."""
    return _call(url, urllib.request.Request(
        f"{url.rstrip('/')}/completions", data=json.dumps(body).encode(),
        headers=_headers(None)))


def embeddings(url: str, body: dict[str, Any]) -> dict:
    """POST /embeddings; OpenAI's embedding list, or :class:`ServerError`."""
    return _call(url, urllib.request.Request(
        f"{url.rstrip('/')}/embeddings", data=json.dumps(body).encode(),
        headers=_headers(None)))


def stream(url: str, body: dict[str, Any], conversation: str | None = None
           ) -> Iterator[dict[str, Any]]:
    """POST /chat/completions with ``stream: true``. The request is sent now (a refusal
    raises :class:`ServerError` here); the returned iterator yields each chunk as the server
    sends it, raises :class:`ServerError` on an error event and :class:`ConnectionError` when
    the stream ends before ``[DONE]``. Closing it (Ctrl-C) closes the connection, which stops
    the answer at the server and frees its slot."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/chat/completions",
        data=json.dumps({**body, "stream": True,
                         "stream_options": {"include_usage": True}}).encode(),
        headers=_headers(conversation))
    answer = _open(url, request, TIMEOUT_S)
    if answer.headers.get_content_type() != "text/event-stream":
        answer.close()
        raise ServerError(url, 502, "the answer is not a stream of events (is this the /v1 "
                                    "URL of an 'hpc-chat serve'?)")
    return _events(url, answer)


def _events(url: str, answer) -> Iterator[dict[str, Any]]:
    with answer:
        try:
            for raw in answer:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if not isinstance(event, dict):
                    raise ValueError("an event is not a JSON object")
                if "error" in event:
                    error = event["error"] if isinstance(event["error"], dict) else {}
                    status = 400 if error.get("type") == "invalid_request_error" else 500
                    raise ServerError(url, status, str(error.get("message")), error.get("code"))
                yield event
        except ValueError as exc:
            raise ServerError(url, 502, f"the stream is not OpenAI's chunks ({exc})") from None
        except TimeoutError:
            raise ServerError(url, 504, f"no token for {TIMEOUT_S:.0f} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionError(f"the server at {url} went away in the middle of the "
                                  f"answer ({type(exc).__name__})") from None
    raise ConnectionError(f"the server at {url} ended the answer before it was complete")


def until_ready(url: str, attempt: Callable[[], Any], *,
                on_wait: Callable[[str], None] | None = None,
                stop: threading.Event | None = None) -> Any:
    """``attempt()`` until the server takes it: a full queue (429) or workers not ready yet
    (503) wait the server's Retry-After and try again, as long as it takes (a pilot job may
    queue for hours); workers that failed to start raise :class:`ServerError` at once.
    ``stop`` set: :class:`Stopped` instead of another try."""
    while True:
        try:
            return attempt()
        except ServerError as exc:
            if exc.status not in (429, 503):
                raise
            if exc.status == 503:
                state = server_status(url)
                if state.get("state") == "failed":
                    raise ServerError(url, 503, "its workers could not start: "
                                                f"{state.get('error') or 'see its log'}",
                                      "workers_failed") from None
                if on_wait is not None:
                    on_wait(f"waiting for the server's workers ({state.get('state')})")
            delay = min(exc.retry_after or 2.0, WAIT_CAP_S)
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise Stopped(str(exc)) from None


class Stopped(HpcChatError):
    """A wait given up because the run is ending."""


def models(url: str) -> list[dict[str, Any]]:
    """GET /models: what the server answers (its agents and ``auto``), each with its ``id``
    and what it runs."""
    return _call(url, urllib.request.Request(f"{url.rstrip('/')}/models", headers=_headers()),
                 timeout=60)["data"]


def api(url: str, path: str, body: dict[str, Any] | None = None) -> dict:
    """GET ``path`` (POST ``body`` when given) under the server's ``/v1`` URL: the JSON
    answer, or :class:`ServerError` with the server's message."""
    data = json.dumps(body).encode() if body is not None else None
    return _call(url, urllib.request.Request(f"{url.rstrip('/')}/{path.lstrip('/')}",
                                             data=data, headers=_headers()), timeout=60)


def server_status(url: str) -> dict:
    """GET /status (what ``hpc-chat status --server`` shows): the server's stage, its blocks
    with their scheduler states, workers, model, requests, tokens/s."""
    return _call(url, urllib.request.Request(f"{url.rstrip('/')}/status",
                                             headers=_headers()), timeout=60)


def check_peer(sock: socket.socket, url: str) -> None:
    """Refuse a TCP connection whose other end, on this host, is another user's socket.

    Any user of a shared node can bind 127.0.0.1:8000 (or ::1, or a port of the node's own
    address) before your server does, or after it stopped; the key sent there would be
    theirs. The kernel's tables (``/proc/net/tcp``, ``tcp6``) hold, for a connection whose
    both ends are on this host, the accepting end with the uid of the socket it came from: the
    key goes out only when that uid is this user's. Checked on the very connection the request
    will use, after it is made, so no second name lookup or address can slip past. A
    connection to another host has no such row here, and is not checked."""
    try:
        ours, theirs = sock.getsockname()[:2], sock.getpeername()[:2]
    except OSError:
        return
    owner = accepting_uid(ours, theirs)
    if owner is not None and owner != os.getuid():
        sock.close()
        raise HpcChatError(
            f"{url}: the program listening at {theirs[0]} port {theirs[1]} of this host "
            f"belongs to {user_name(owner)}, not to you: your API key is not sent to it. Your "
            f"server may not be running (hpc-chat status --server); start it without "
            f"--host/--port to use a socket only you can reach")


def accepting_uid(ours: tuple, theirs: tuple) -> int | None:
    """The uid of this host's socket at ``theirs`` that is connected to ``ours``, or None."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        v6 = table.endswith("6")
        local, remote = _proc_endpoint(theirs, v6), _proc_endpoint(ours, v6)
        if local is None or remote is None:
            continue
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 7 and fields[1] == local and fields[2] == remote:
                return int(fields[7])
    return None


def _proc_endpoint(endpoint: tuple, v6: bool) -> str | None:
    """``(ip, port)`` as /proc/net/tcp (``v6``: tcp6) writes it: each 32-bit word of the
    address in the host's byte order, in hex, then the port. None when the address cannot be
    in that table (IPv6 in the IPv4 one)."""
    ip = ipaddress.ip_address(endpoint[0])
    if ip.version == 4 and v6:
        ip = ipaddress.ip_address(f"::ffff:{ip}")  # a dual-stack socket's view of it
    elif ip.version == 6 and not v6:
        if ip.ipv4_mapped is None:
            return None
        ip = ip.ipv4_mapped
    packed = ip.packed
    words = "".join(f"{struct.unpack('=I', packed[i:i + 4])[0]:08X}"
                    for i in range(0, len(packed), 4))
    return f"{words}:{int(endpoint[1]):04X}"


class _PeerChecked:
    """Mixed into an HTTP(S) connection: it will not talk to another user's program on this
    host (:func:`check_peer`, once connected, before any byte of the request)."""

    def connect(self) -> None:
        super().connect()
        scheme = "https" if isinstance(self, http.client.HTTPSConnection) else "http"
        check_peer(self.sock, f"{scheme}://{self.host}:{self.port}")


class _CheckedConnection(_PeerChecked, http.client.HTTPConnection):
    pass


class _CheckedTLSConnection(_PeerChecked, http.client.HTTPSConnection):
    pass


class _CheckedHandler(urllib.request.HTTPHandler):
    def http_open(self, request: urllib.request.Request):
        return self.do_open(_CheckedConnection, request)


class _CheckedTLSHandler(urllib.request.HTTPSHandler):
    def https_open(self, request: urllib.request.Request):
        return self.do_open(_CheckedTLSConnection, request, context=self._context)


def _call(url: str, request: urllib.request.Request, timeout: float = TIMEOUT_S) -> dict:
    with _open(url, request, timeout) as answer:
        try:
            body = json.loads(answer.read())
        except ValueError:
            raise ServerError(url, 502, "the answer is not JSON (is this the /v1 URL of an "
                                        "'hpc-chat serve'?)") from None
        except TimeoutError:
            raise ServerError(url, 504, f"no answer within {timeout:.0f} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionError(f"the server at {url} went away in the middle of the "
                                  f"answer ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise ServerError(url, 502, "the answer is not a JSON object")
    return body


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the Unix socket ``path`` (a server that only this user can reach)."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class _UnixHandler(urllib.request.AbstractHTTPHandler):
    """``http+unix://%2Fpath%2Fto.sock/v1/...`` URLs (as requests-unixsocket writes them)."""

    def unix_open(self, request: urllib.request.Request):
        path = urllib.parse.unquote(request.host)
        return self.do_open(lambda _host, timeout=TIMEOUT_S, **_: _UnixConnection(path, timeout),
                            request)

    def unix_request(self, request: urllib.request.Request) -> urllib.request.Request:
        request.add_unredirected_header("Host", "localhost")  # not the socket's path
        return self.do_request_(request)


_opener = urllib.request.build_opener(_CheckedHandler, _CheckedTLSHandler)
setattr(_UnixHandler, "http+unix_open", _UnixHandler.unix_open)
setattr(_UnixHandler, "http+unix_request", _UnixHandler.unix_request)
# Error statuses become HTTPError for this scheme too, as for http (401, 429, 503 ...).
setattr(_UnixHandler, "http+unix_response", urllib.request.HTTPErrorProcessor.http_response)
_opener.add_handler(_UnixHandler())


def urlopen(request: urllib.request.Request | str, timeout: float = TIMEOUT_S):
    """``urllib.request.urlopen``, for ``http+unix://`` URLs as well."""
    return _opener.open(request, timeout=timeout)


def _open(url: str, request: urllib.request.Request, timeout: float):
    try:
        return urlopen(request, timeout)
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
    except TimeoutError:  # connected, and no answer in time: the request's failure
        raise ServerError(url, 504, f"no answer within {timeout:.0f} s") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise ConnectionError(f"the server at {url} cannot be reached: "
                              f"{getattr(exc, 'reason', exc)}") from None
