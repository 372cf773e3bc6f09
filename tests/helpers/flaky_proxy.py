"""A loopback HTTP proxy in front of a real OpenAI-compatible server that answers as a test
scripts it: 429 (with ``Retry-After: 0``), a hang past the client's timeout, a 401 whose
long message quotes the Authorization header it got (as careless servers do), or the real
server's answer. It forces the rare failures of a remote model at the narrowest seam, the
HTTP exchange itself; everything it forwards is the real server's."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FORWARD, TOO_MANY, HANG, ECHO_KEY = "forward", "429", "hang", "401-echo"


class FlakyProxy:
    """``script``: what each request in turn gets; after it, every request is forwarded."""

    def __init__(self, upstream: str, script: list[str]):
        self.upstream = upstream.rstrip("/")
        self.script = list(script)
        self.seen: list[dict] = []  # each request's path and Authorization, in order
        self.released = threading.Event()  # ends every hang (at close)
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                with proxy._lock:
                    proxy.in_flight += 1
                    proxy.most_in_flight = max(proxy.most_in_flight, proxy.in_flight)
                try:
                    self._answer()
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.seen.append({"path": self.path,
                                       "authorization": self.headers.get("Authorization")})
                    step = proxy.script.pop(0) if proxy.script else FORWARD
                if step == TOO_MANY:
                    self._send(429, b'{"error": {"message": "slow down", "type": '
                                    b'"rate_limit_error", "code": "rate_limited"}}',
                               {"Retry-After": "0"})
                elif step == ECHO_KEY:
                    quoted = ("x" * 250 + " bad key: " + self.headers.get("Authorization", ""))
                    self._send(401, json.dumps({"error": {"message": quoted,
                                                          "type": "invalid_request_error",
                                                          "code": "invalid_api_key"}}).encode(),
                               {})
                elif step == HANG:
                    proxy.released.wait(60)
                else:
                    self._forward(body)

            def _forward(self, body: bytes):
                request = urllib.request.Request(
                    proxy.upstream + self.path.removeprefix("/v1"), data=body, method="POST",
                    headers={k: v for k, v in self.headers.items()
                             if k.lower() in ("authorization", "content-type")})
                try:
                    with urllib.request.urlopen(request, timeout=120) as answer:
                        self._send(answer.status, answer.read(), {})
                except urllib.error.HTTPError as exc:
                    self._send(exc.code, exc.read(), {})

            def _send(self, status: int, payload: bytes, headers: dict):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (its timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
