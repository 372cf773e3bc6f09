"""Open OnDemand's ``/rnode/HOST/PORT/...`` reverse proxy, small enough for a test.

What OnDemand's Apache does for the relative node URI (mod_ood_proxy's node_proxy_handler
under ``<LocationMatch "^/rnode/(?<host>[^/]+)/(?<port>\\d+)(?<uri>/.*|)">``): strip the
prefix, forward to ``http://HOST:PORT/rest`` (``/`` for an empty rest), hand the answer back
as it comes (server-sent events included) with its ``Set-Cookie`` headers untouched, and refuse
hosts its ``host_regex`` does not allow. It runs in threads on ``127.0.0.1`` and a free port;
bodies go back to the browser delimited by the end of the connection (HTTP/1.0), flushed chunk
by chunk, so a stream is never held back.
"""

from __future__ import annotations

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RNODE = re.compile(r"^/rnode/(?P<host>[^/]+)/(?P<port>\d+)(?P<uri>/.*|)$")
# Headers for one hop only (RFC 9110 7.6.1), never forwarded; Host is set to the backend's.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "content-length"}


class RnodeProxy:
    """``with RnodeProxy() as proxy: proxy.url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, host_regex: str = r".+", timeout: float = 120.0):
        allowed = re.compile(host_regex)
        self.requests: list[str] = []  # the paths it was asked for, for the test to check

        class Handler(_Handler):
            pass
        Handler.allowed, Handler.timeout_s, Handler.seen = allowed, timeout, self.requests
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RnodeProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(30)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends with the connection: streams pass as they come
    allowed: re.Pattern
    timeout_s: float
    seen: list[str]

    def log_message(self, format, *args) -> None:  # quiet: pytest shows failures, not traffic
        pass

    def _proxy(self) -> None:
        self.seen.append(self.path)
        match = RNODE.match(self.path)
        if not match:
            return self._refuse(404, "not an /rnode/HOST/PORT/ path")
        host, port = match["host"], int(match["port"])
        if not self.allowed.fullmatch(host):
            return self._refuse(404, f"host {host} is not allowed by host_regex")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = f"{host}:{port}"
        backend = http.client.HTTPConnection(host, port, timeout=self.timeout_s)
        try:
            backend.request(self.command, match["uri"] or "/", body=body, headers=headers)
            answer = backend.getresponse()
        except OSError as exc:
            backend.close()
            return self._refuse(502, f"backend {host}:{port}: {exc}")
        try:
            self.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():  # each Set-Cookie on its own line
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.end_headers()
            while chunk := answer.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            pass  # the browser went away: so does the backend connection
        finally:
            backend.close()

    def _refuse(self, status: int, message: str) -> None:
        data = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _proxy
