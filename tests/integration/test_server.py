"""`hpc-chat serve` as a real process on loopback, with real clients: the openai SDK, curl and
threads. Answers come from real Parsl workers; the echo model gives answers of a known length
and pace, so "chunks arrive before the answer ends" does not depend on the machine's speed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import openai
import pytest

from tests.helpers.engines import engine_holds
from tests.helpers.procs import wait_until_none_of_home
from tests.helpers.server import start_server, stop

pytestmark = [pytest.mark.parsl]


@pytest.fixture
def echo_server(tmp_path, fixtures):
    server = start_server(tmp_path, fixtures / "workflows" / "batched.yml")
    yield server
    stop(server)


def test_models_answers_streams_and_errors_through_the_openai_sdk(echo_server):
    client = echo_server.client()
    ids = [m.id for m in client.models.list().data]
    assert ids == ["analytical_agent", "balanced_agent", "creative_agent", "auto"]

    done = client.chat.completions.create(
        model="balanced_agent", messages=[{"role": "user", "content": "alpha beta gamma"}])
    assert done.choices[0].message.content.startswith("alpha beta gamma alpha")
    assert done.choices[0].finish_reason == "stop" and done.usage.completion_tokens == 12

    arrivals, pieces, usage = [], [], None
    stream = client.chat.completions.create(
        model="balanced_agent", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "Repeat."},
                  {"role": "user", "content": "one two three"}])
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == " ".join(["one two three"] * 4)
    assert len(pieces) >= 10  # token by token, not one piece at the end
    assert arrivals[-1] - arrivals[1] >= 1.5  # 12 tokens at 0.25 s: spread over ~3 s
    assert usage is not None and usage.completion_tokens == 12

    with pytest.raises(openai.AuthenticationError):
        echo_server.client(key="wrong").models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user",
                                                                 "content": "x"}])
    assert "balanced_agent" in str(missing.value) and missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="auto", temperature=9,
                                       messages=[{"role": "user", "content": "x"}])
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages=[{"role": "assistant",
                                                                "content": "x"}])


def test_curl_health_status_metrics_and_limits(echo_server):
    auth = ["-H", f"Authorization: Bearer {echo_server.key}"]
    body = json.dumps({"model": "creative_agent",
                       "messages": [{"role": "user", "content": "curl works"}]})
    out = subprocess.run(["curl", "-sS", "-H", "Content-Type: application/json", *auth,
                          "-d", body, f"{echo_server.url}/chat/completions"],
                         capture_output=True, text=True, timeout=60)
    answer = json.loads(out.stdout)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"].startswith("curl works curl")

    no_key = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             f"{echo_server.url}/models"], capture_output=True, text=True)
    assert no_key.stdout == "401"
    big = subprocess.run(["curl", "-s", *auth, "-H", "Content-Type: application/json",
                          "--data-binary", "@-", f"{echo_server.url}/chat/completions"],
                         input=json.dumps({"model": "auto", "messages": [
                             {"role": "user", "content": "x" * (2 << 20)}]}),
                         capture_output=True, text=True)
    assert json.loads(big.stdout)["error"]["code"] == "request_too_large"

    status, health = echo_server.get("/health", key=False)
    assert status == 200 and health == {"status": "ok"}
    status, state = echo_server.get("/v1/status")
    assert status == 200 and state["state"] == "ready" and state["workers"] >= 1
    assert state["blocks"] and state["blocks"][0]["state"] == "RUNNING"
    assert state["site"] == "local" and state["tokens_per_s_last_minute"] > 0
    status, metrics = echo_server.get("/metrics")
    assert status == 200 and 'hpc_chat_requests_total{status="ok"}' in metrics
    assert "hpc_chat_request_seconds_bucket" in metrics
    assert re.search(r"^hpc_chat_workers [1-9]", metrics, re.M)
    env = {**os.environ, "HPC_CHAT_HOME": str(echo_server.home)}  # the server's key file
    shown = subprocess.run([sys.executable, "-m", "hpc_chat", "status", "--server", "--json"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    shown = json.loads(shown.stdout)
    assert shown["url"] == echo_server.url and shown["state"] == "ready"
    assert shown["workers"] >= 1 and shown["blocks"][0]["state"] == "RUNNING"
    table = subprocess.run([sys.executable, "-m", "hpc_chat", "status", "--server",
                            echo_server.url], capture_output=True, text=True, env=env,
                           timeout=120)
    assert table.returncode == 0 and "ready" in table.stdout and "RUNNING" in table.stdout
    for refused in ("401", "413"):  # the refusals above, counted apart from the answers
        assert re.search(rf'^hpc_chat_refused_total{{status="{refused}"}} [1-9]', metrics,
                         re.M), refused


class Clients:
    """``n`` clients in threads, each asking ``{prefix} {i}`` once; ``join`` waits for all."""

    def __init__(self, client: openai.OpenAI, n: int, prefix: str, **options):
        self.answers: dict[int, str] = {}
        self.errors: list[Exception] = []

        def ask(i: int) -> None:
            try:
                done = client.chat.completions.create(
                    model="balanced_agent", messages=[{"role": "user",
                                                       "content": f"{prefix} {i}"}],
                    **options)
                self.answers[i] = done.choices[0].message.content
            except Exception as exc:  # noqa: BLE001 - collected and reported by the test
                self.errors.append(exc)

        self.threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def join(self) -> dict[int, str]:
        for t in self.threads:
            t.join(300)
        assert not self.errors, self.errors[:3]
        return self.answers


def test_ask_answers_from_a_running_server_and_conversations_go_on(echo_server):
    """`hpc-chat ask` finds the server through the home it shares and answers from its warm
    workers, says so, and a conversation's turns are stored by the server."""
    env = {**os.environ, "HPC_CHAT_HOME": str(echo_server.home)}

    def ask(*args):
        return subprocess.run([sys.executable, "-m", "hpc_chat", "ask", *args], env=env,
                              capture_output=True, text=True, timeout=120)
    first = ask("first question", "--agents", "balanced_agent", "--conversation", "notes")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("first question first question")
    assert f"answered by the server at {echo_server.url}: balanced_agent" in first.stderr
    second = ask("second question", "--conversation", "notes")  # routed: model auto
    assert second.returncode == 0 and "answered by the server" in second.stderr
    history = subprocess.run([sys.executable, "-m", "hpc_chat", "history", "notes", "--json"],
                             env=env, capture_output=True, text=True, timeout=60)
    turns = [(m["role"], m["content"]) for m in json.loads(history.stdout)]
    assert [t for t in turns if t[0] == "user"] == [("user", "first question"),
                                                   ("user", "second question")]
    unknown = ask("x", "--agents", "nobody")
    assert unknown.returncode == 2 and "model_not_found" not in unknown.stderr
    assert "has no agent 'nobody'" in unknown.stderr and "Traceback" not in unknown.stderr


def test_64_concurrent_clients_are_answered_once_in_batches(echo_server):
    _, before = echo_server.get("/v1/status")
    answers = Clients(echo_server.client(), 64, "request", max_tokens=4).join()
    assert answers == {i: f"request {i} request {i}" for i in range(64)}
    _, after = echo_server.get("/v1/status")
    tasks = after["requests"]["parsl_tasks_submitted"] - \
        before["requests"]["parsl_tasks_submitted"]
    assert tasks < 64  # several requests to a task: decoded together in the workers


def test_a_burst_accepted_at_once_is_served_whole(echo_server):
    """With the server stopped, 64 clients connect and send their requests; when it runs
    again, asyncio accepts all 64 before reading any, so all wait for their first request at
    once (more than the 32 an idle flood may hold). Those with a request in the kernel's
    buffer are not pushed out: every one is answered."""
    import socket

    port = int(echo_server.url.rsplit(":", 1)[1].split("/")[0])
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    os.kill(echo_server.proc.pid, signal.SIGSTOP)
    try:
        conns = [socket.create_connection(("127.0.0.1", port), 10) for _ in range(64)]
        for conn in conns:
            conn.sendall(request)
    finally:
        os.kill(echo_server.proc.pid, signal.SIGCONT)
    assert status_lines(conns) == [b"HTTP/1.1 200 OK"] * 64


def test_clients_that_connect_before_they_write_are_all_served(echo_server):
    """64 clients connect while the server is stopped and write their requests only once it
    has accepted them all (a burst whose threads connect, then are scheduled to write): while
    there is room below the server's bound, none is pushed out as an idle one (before, the
    first 32 were closed). The server has accepted them when it answers a probe that
    connected after them."""
    import socket

    port = int(echo_server.url.rsplit(":", 1)[1].split("/")[0])
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    os.kill(echo_server.proc.pid, signal.SIGSTOP)
    try:
        conns = [socket.create_connection(("127.0.0.1", port), 10) for _ in range(64)]
        probe = socket.create_connection(("127.0.0.1", port), 10)
        probe.sendall(request)
    finally:
        os.kill(echo_server.proc.pid, signal.SIGCONT)
    assert status_lines([probe]) == [b"HTTP/1.1 200 OK"]
    for conn in conns:
        conn.sendall(request)
    assert status_lines(conns) == [b"HTTP/1.1 200 OK"] * 64


def status_lines(conns) -> list[bytes]:
    """Each connection's response status line, read to its end (b"" if it was closed)."""
    lines = []
    for conn in conns:
        conn.settimeout(60)
        data = b""
        with conn:
            try:
                while chunk := conn.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
        lines.append(data.split(b"\r\n", 1)[0])
    return lines


def test_a_client_that_disconnects_stops_its_answer(tmp_path, fixtures):
    """An answer of 30 tokens at 1 s (30 s): the client reads three pieces and leaves; its
    Parsl task ends within a few tokens instead of running on (the bound, 15 s, is half of
    what the answer had left). The partial answer is not cached: the same request (same
    seed) asked again gets the whole answer."""
    import httpx2

    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml",
                          model="echo?tokens=30&token_s=1")
    try:
        body = {"model": "balanced_agent", "stream": True, "seed": 5, "max_tokens": 30,
                "messages": [{"role": "user", "content": "slow"}]}
        headers = {"Authorization": f"Bearer {server.key}"}
        with httpx2.stream("POST", f"{server.url}/chat/completions", json=body,
                           headers=headers, timeout=60) as answer:
            seen = 0
            for line in answer.iter_lines():
                seen += line.startswith("data: {")
                if seen >= 3:
                    break
        left = time.monotonic()
        while time.monotonic() - left < 30:
            _, state = server.get("/v1/status")
            if state["requests"]["parsl_tasks_pending"] == 0 and \
                    state["requests"]["running"] == 0:
                break
            time.sleep(0.1)
        assert state["requests"]["parsl_tasks_pending"] == 0, state
        assert time.monotonic() - left < 15  # the answer had about 27 s to go
        _, metrics = server.get("/metrics")
        assert 'hpc_chat_requests_total{status="cancelled"} 1.0' in metrics
        again = server.client().chat.completions.create(
            model="balanced_agent", seed=5, max_tokens=30,
            messages=[{"role": "user", "content": "slow"}])
        assert again.usage.completion_tokens == 30 and again.choices[0].finish_reason == "stop"
    finally:
        stop(server)


def test_a_worker_killed_under_load_loses_no_request(tmp_path, fixtures):
    """16 clients at once, answers of 1 s on 2 workers; one worker is SIGKILLed while it
    answers: its request is retried and every client gets its own answer."""
    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml",
                          model="echo?tokens=10&token_s=0.1")
    try:
        client = server.client()
        first = client.chat.completions.create(
            model="balanced_agent", messages=[{"role": "user", "content": "who answers"}])
        worker = first.model_extra["hpc_chat"]["agents"][0]["worker"]["pid"]
        clients = Clients(client, 16, "client")
        # Killed once the engine holds a request of each worker: in the middle of an answer.
        engine_holds(worker, 2, home=server.home)
        os.kill(worker, signal.SIGKILL)
        assert clients.join() == {i: " ".join([f"client {i}"] * 5) for i in range(16)}
    finally:
        stop(server)


def test_sigterm_stops_the_server_and_its_workers(tmp_path, fixtures):
    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(120) == 0
    assert "server stopped; workers and pilot jobs ended" in (tmp_path / "serve.log").read_text()
    assert not (server.home / "server" / "server.json").exists()
    assert wait_until_none_of_home(server.home, 30) == {}


@pytest.mark.model
def test_the_real_model_streams_its_tokens(tmp_path, fixtures):
    """Tokens of the real model arrive one by one, and they are the answer: the server checks
    the streamed text against the final result and would send an error event if not."""
    import httpx2

    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml", model=None)
    try:
        body = {"model": "analytical_agent", "stream": True, "max_tokens": 24, "seed": 3,
                "messages": [{"role": "user", "content": "Name three planets."}]}
        events = []
        with httpx2.stream("POST", f"{server.url}/chat/completions", json=body, timeout=120,
                           headers={"Authorization": f"Bearer {server.key}"}) as answer:
            events = [line[6:] for line in answer.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert not [c for c in chunks if "error" in c], chunks
        pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
        pieces = [p for p in pieces if p]
        assert len(pieces) >= 5 and "".join(pieces).strip()
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        # The next turn, sent with its history as OpenAI clients send it, starts from the cache
        # its previous answer left: the whole previous prompt, at least, was not evaluated again.
        client = openai.OpenAI(base_url=server.url, api_key=server.key)
        history = [{"role": "user", "content": "Name a planet."}]
        first = client.chat.completions.create(model="analytical_agent", messages=history,
                                               max_tokens=24, seed=4)
        history.append({"role": "assistant", "content": first.choices[0].message.content})
        history.append({"role": "user", "content": "How big is it?"})
        second = client.chat.completions.create(model="analytical_agent", messages=history,
                                                max_tokens=24, seed=5)
        cached = second.usage.prompt_tokens_details.cached_tokens
        assert first.usage.prompt_tokens + first.usage.completion_tokens // 2 <= cached
        assert cached < second.usage.prompt_tokens  # the new message was evaluated
        assert first.usage.prompt_tokens_details.cached_tokens < first.usage.prompt_tokens
    finally:
        stop(server)


def test_the_queue_bound_answers_429_with_retry_after(tmp_path, fixtures):
    """--max-queue 1 and an answer of 3 s in flight: the next request is refused at once with
    429 and Retry-After (the SDK's RateLimitError), and is answered once the first is done."""
    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml",
                          extra=("--max-queue", "1"))
    try:
        busy = Clients(server.client(), 1, "first")
        deadline = time.monotonic() + 30
        while server.get("/v1/status")[1]["requests"]["running"] < 1:
            assert time.monotonic() < deadline, "the first request never started"
            time.sleep(0.05)
        with pytest.raises(openai.RateLimitError) as refused:
            server.client().chat.completions.create(
                model="balanced_agent", messages=[{"role": "user", "content": "second"}])
        assert refused.value.response.headers["retry-after"] == "2"
        assert refused.value.code == "queue_full"
        assert busy.join() == {0: " ".join(["first 0"] * 6)}
        later = server.client().chat.completions.create(
            model="balanced_agent", messages=[{"role": "user", "content": "second"}])
        assert later.choices[0].message.content.startswith("second second")
    finally:
        stop(server)


def test_a_history_that_cannot_be_written_fails_that_request_and_frees_its_slot(tmp_path,
                                                                               fixtures):
    """history.db held locked by another process (a second `chat`, past SQLite's 5 s wait):
    each request of a conversation fails with 500 history_unavailable, naming the history,
    and never keeps its place in the queue: with --max-queue 2, three such failures in a
    row are three 500s, not a 429, and once the lock is gone the next request is answered."""
    import sqlite3

    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml",
                          extra=("--max-queue", "2"))
    try:
        client = server.client()
        client.chat.completions.create(model="balanced_agent", messages=[
            {"role": "user", "content": "first"}], extra_headers={"X-Conversation-Id": "c"})
        holder = sqlite3.connect(server.home / "history.db", timeout=30)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(3):
                try:
                    client.chat.completions.create(
                        model="balanced_agent", messages=[{"role": "user", "content": f"n {i}"}],
                        extra_headers={"X-Conversation-Id": "c"})
                    raise AssertionError("answered while the history was locked")
                except openai.InternalServerError as exc:
                    assert exc.status_code == 500, exc
                    assert exc.body["code"] == "history_unavailable", exc.body
                    assert "conversation history" in exc.body["message"]
        finally:
            holder.rollback()
            holder.close()
        _, state = server.get("/v1/status")
        assert state["requests"]["running"] == 0
        again = client.chat.completions.create(model="balanced_agent", messages=[
            {"role": "user", "content": "after"}], extra_headers={"X-Conversation-Id": "c"})
        assert again.choices[0].message.content.startswith("after")
    finally:
        stop(server)


def test_by_default_the_server_listens_on_a_socket_only_its_user_can_open(tmp_path, fixtures):
    """Without --host/--port: a Unix socket, mode 0600 in a 0700 directory of the user's
    own (the API has no TCP port; the process's TCP listeners are the token hub, TLS, and
    Parsl's interchange, CurveZMQ). `hpc-chat ask` finds and uses it, and the openai SDK speaks to
    it through httpx's Unix-socket transport. OpenAI's `user` field names the end user, not a
    stored conversation: only X-Conversation-Id stores turns."""
    import stat
    import urllib.parse

    import httpx2

    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml", listen=(),
                          model="echo")
    try:
        assert server.url.startswith("http+unix://")
        path = urllib.parse.unquote(urllib.parse.urlsplit(server.url).netloc)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.lstat(os.path.dirname(path)).st_mode) == 0o700
        env = {**os.environ, "HPC_CHAT_HOME": str(server.home)}
        ask = subprocess.run([sys.executable, "-m", "hpc_chat", "ask", "over the socket"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert ask.returncode == 0, ask.stderr
        assert ask.stdout.strip() == "over the socket" and "answered by the server" in ask.stderr
        wrong = subprocess.run([sys.executable, "-m", "hpc_chat", "ask", "with a wrong key"],
                               env={**env, "HPC_CHAT_API_KEY": "not-the-key"},
                               capture_output=True, text=True, timeout=120)
        assert wrong.returncode == 2, wrong.stdout + wrong.stderr  # an error, not an answer
        assert "answered 401" in wrong.stderr and "Traceback" not in wrong.stderr
        client = openai.OpenAI(base_url="http://localhost/v1", api_key=server.key,
                               max_retries=0, http_client=httpx2.Client(
                                   transport=httpx2.HTTPTransport(uds=path)))
        done = client.chat.completions.create(
            model="balanced_agent", user="alice",
            messages=[{"role": "user", "content": "alice asks"}])
        assert done.choices[0].message.content == "alice asks"
        stored = subprocess.run([sys.executable, "-m", "hpc_chat", "history"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert "alice" not in stored.stdout, stored.stdout  # `user` stored nothing
    finally:
        stop(server)
    assert not os.path.exists(path)  # the socket goes with the server
