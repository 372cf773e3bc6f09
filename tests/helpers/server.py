"""`hpc-chat serve` started as a real process for a test, its key, its clients, its end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai

from hpc_chat.client.http import urlopen

PACE = "echo?tokens=12&token_s=0.25"  # 3 s per answer, a token every 0.25 s


class Server:
    def __init__(self, home: Path, proc: subprocess.Popen, url: str):
        self.home, self.proc, self.url = home, proc, url
        self.key = (home / "server" / "api-key").read_text().strip()

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key or self.key, max_retries=0,
                             timeout=120)

    def get(self, path: str, key: bool = True) -> tuple[int, dict | str]:
        request = urllib.request.Request(self.url.removesuffix("/v1") + path)
        if key:
            request.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urlopen(request, timeout=30) as answer:
                body = answer.read().decode()
                status = answer.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body


def start_server(tmp_path: Path, config: Path, model: str | None = PACE,
                 extra: tuple = (), wait_ready: bool = True,
                 listen: tuple = ("--port", "0"), env: dict | None = None) -> Server:
    """``hpc-chat serve`` on any free TCP port (``listen=()``: on its own Unix socket);
    ``env`` over the test's environment (``HPC_CHAT_HOME``: another server's home)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HPC_CHAT_HOME": str(tmp_path / "home"), **(env or {})}
    home = Path(env["HPC_CHAT_HOME"])
    argv = [sys.executable, "-m", "hpc_chat", "serve", "--config", str(config), *listen,
            *extra]
    if model:
        argv += ["--model", model]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "serve.log", "w"))
    try:
        return _started(proc, home, tmp_path, wait_ready)
    except BaseException:  # a server that did not come up is not left running
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


def _started(proc: subprocess.Popen, home: Path, tmp_path: Path, wait_ready: bool) -> Server:
    deadline = time.monotonic() + 120
    info = home / "server" / "server.json"
    while time.monotonic() < deadline and _announced(info) != proc.pid:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        time.sleep(0.2)
    server = Server(home, proc, json.loads(info.read_text())["url"])
    if not wait_ready:
        return server
    while time.monotonic() < deadline and server.get("/health", key=False)[0] != 200:
        time.sleep(0.5)
    assert server.get("/health", key=False)[0] == 200, (tmp_path / "serve.log").read_text()
    return server


def _announced(info: Path) -> int | None:
    """The pid of the server that wrote ``server.json`` (another may share the home)."""
    try:
        return json.loads(info.read_text()).get("pid")
    except (OSError, ValueError):
        return None


def stop(server: Server) -> None:
    """SIGTERM, as a user's Ctrl-C or scancel; a server still answering after 120 s (a test
    that failed with a long answer in flight) is killed, so nothing outlives the test."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(120)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(30)
            raise


def real_model_server(tmp_path_factory):
    """A module's ``hpc-chat serve`` on the packaged agents with the real embedded model
    (``fast.yml``), stopped when the module is done: ``yield from`` it in a fixture."""
    from tests.conftest import FIXTURES

    started = start_server(tmp_path_factory.mktemp("server"),
                           FIXTURES / "workflows" / "fast.yml", model=None)
    yield started
    stop(started)
