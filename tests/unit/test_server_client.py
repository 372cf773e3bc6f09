"""The CLI's side of a server, against a stub HTTP server on loopback that misbehaves on cue
(a real `hpc-chat serve` does not cut a stream or answer HTML): one clear message, the right
exit code, never a traceback; a server whose workers are not ready yet is waited for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

CHUNK = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "auto",
         "choices": [{"index": 0, "delta": {"content": "half an "}, "finish_reason": None}]}
DONE = {**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "hpc_chat": {"agents": [{"agent": "stub_agent"}]}}


class Stub(BaseHTTPRequestHandler):
    behaviour = "ok"
    posts = 0
    busy_for = 0  # this many requests are answered 503 first

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, kind: str = "application/json", **headers):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, json.dumps({"data": [{"id": "stub_agent"}, {"id": "auto"}]}).encode())
        elif self.path == "/v1/status":
            self._send(200, json.dumps({"state": "starting"}).encode())
        else:
            self._send(404, b"{}")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).posts += 1
        if type(self).posts <= self.busy_for:
            error = {"error": {"message": "no worker has its model loaded yet (starting)",
                               "type": "server_error", "param": None,
                               "code": "model_not_ready"}}
            return self._send(503, json.dumps(error).encode(), Retry_After="0.1")
        if self.behaviour == "html":
            return self._send(200, b"<html>a login page</html>", "text/html")
        if not body.get("stream"):
            return self._send(200, json.dumps({
                "choices": [{"message": {"content": "whole"}, "finish_reason": "stop"}],
                "usage": {"completion_tokens": 1}}).encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(f"data: {json.dumps(CHUNK)}\n\n".encode())
        if self.behaviour == "cut":  # the server dies in the middle of the answer
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(f"data: {json.dumps(DONE)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def stub():
    def start(behaviour: str, busy_for: int = 0):
        handler = type("Handler", (Stub,), {"behaviour": behaviour, "busy_for": busy_for,
                                            "posts": 0})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return f"http://127.0.0.1:{server.server_port}/v1", handler

    started: list = []
    yield start
    for server in started:
        server.shutdown()


def cli(tmp_path, *args, stdin: str = ""):
    env = {**os.environ, "HPC_CHAT_HOME": str(tmp_path / "home"), "HPC_CHAT_API_KEY": "k"}
    return subprocess.run([sys.executable, "-m", "hpc_chat", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_a_stream_cut_in_the_middle_is_one_message_and_the_chat_goes_on(stub, tmp_path):
    url, _ = stub("cut")
    done = cli(tmp_path, "chat", "--server", url, stdin="hello\nagain\n/quit\n")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("went away in the middle of the answer") + \
        done.stderr.count("ended the answer before it was complete") == 2, done.stderr
    assert "Traceback" not in done.stderr and "bye" in done.stdout


def test_ask_waits_while_the_servers_workers_start(stub, tmp_path):
    url, handler = stub("ok", busy_for=2)
    done = cli(tmp_path, "ask", "--server", url, "hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "half an \n" and handler.posts == 3
    assert f"answered by the server at {url}: stub_agent" in done.stderr


def test_an_answer_that_is_not_json_fails_cleanly(stub, tmp_path):
    url, _ = stub("html")
    done = cli(tmp_path, "ask", "--server", url, "--json", "hello")
    assert done.returncode == 1, done.stderr
    assert "is not JSON" in done.stderr and "Traceback" not in done.stderr
    streamed = cli(tmp_path, "ask", "--server", url, "hello")
    assert streamed.returncode == 1 and "Traceback" not in streamed.stderr
    assert "is this the /v1 URL of an 'hpc-chat serve'?" in streamed.stderr


def test_a_batch_waits_for_the_servers_workers(stub, tmp_path):
    url, handler = stub("ok", busy_for=3)
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    done = cli(tmp_path, "batch", "in.txt", "-o", "out.jsonl", "--server", url)
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["response"] for o in out] == ["whole", "whole"] and handler.posts == 5
