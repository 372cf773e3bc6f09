"""Attacks by another user of a shared node, made as a real second Unix user (``useradd``;
the test machine is root) against the commands of this one: a planted home, a symlinked lock
or output in a shared directory, the engine's socket directory taken first. Each attack fails:
the victim's command refuses with one clear message, or completes, and nothing the attacker
pointed at is touched."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.skipif(os.getuid() != 0 or not shutil.which("useradd"),
                                 reason="needs root to make a second user (as in CI)")]

ATTACKER = "hcattacker"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHIPPED = Path(__file__).resolve().parents[2] / "site_configs"
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "python3"  # the venv may be
# where the other user cannot read


@pytest.fixture(scope="module")
def attacker() -> str:
    if subprocess.run(["id", ATTACKER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", ATTACKER],
                       check=True, capture_output=True)
    return ATTACKER


@pytest.fixture
def shared():
    """A directory every user can write, with /tmp's sticky bit (a project's scratch)."""
    path = Path(tempfile.mkdtemp(prefix="hc", dir="/tmp"))  # short: sockets go there
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(user: str, *argv: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", *argv], check=True, capture_output=True,
                   timeout=60)


def hpc_chat(*args: str, home: Path, env: dict | None = None, cwd: Path | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "HPC_CHAT_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-m", "hpc_chat", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_a_home_planted_by_another_user_is_refused_and_its_profile_never_runs(
        attacker, shared, tmp_path):
    """The attacker makes the victim's HPC_CHAT_HOME first, open to all, with a local site
    profile whose worker_init writes a file: the victim's command refuses the home, naming
    its owner, and the profile never runs."""
    home = shared / "home"
    proof = shared / "proof"
    profile = (SHIPPED / "local.yaml").read_text().replace(
        "  launcher: {type: SingleNodeLauncher}",
        f"  launcher: {{type: SingleNodeLauncher}}\n  worker_init: \"id > {proof}\"")
    planted = shared / "local.yaml"
    planted.write_text(profile)
    planted.chmod(0o644)
    as_user(attacker, "mkdir", "-m", "0777", str(home))
    as_user(attacker, "mkdir", "-m", "0777", str(home / "sites"))
    as_user(attacker, "cp", str(planted), str(home / "sites" / "local.yaml"))
    ran = hpc_chat("ask", "--model", "echo", "hello", home=home, cwd=tmp_path, timeout=120)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert f"{home} (HPC_CHAT_HOME) belongs to {attacker}" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert not proof.exists()


def test_a_lock_or_output_symlinked_by_another_user_is_never_written_through(
        attacker, shared, tmp_path):
    """In a shared output directory the attacker links OUT.lock, then OUT, to a file of the
    victim: the batch refuses each with one message, and the file is untouched."""
    precious = tmp_path / "precious.txt"
    precious.write_text("precious\n")
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    out = shared / "out.jsonl"
    config = ["--config", str(FIXTURES / "workflows" / "local-echo.yml"), "--model", "echo"]
    as_user(attacker, "ln", "-s", str(precious), str(shared / "out.jsonl.lock"))
    ran = hpc_chat("batch", str(prompts), "-o", str(out), *config, home=tmp_path / "home")
    assert ran.returncode == 2, ran.stderr
    assert "out.jsonl.lock: cannot create the output's lock file: it is a symbolic link" \
        in ran.stderr and "Traceback" not in ran.stderr
    as_user(attacker, "rm", str(shared / "out.jsonl.lock"))
    new = tmp_path / "made-through-a-link"
    for target, extra in ((new, []), (precious, ["--resume"])):
        as_user(attacker, "ln", "-sfn", str(target), str(out))
        ran = hpc_chat("batch", str(prompts), "-o", str(out), *config, *extra,
                       home=tmp_path / "home")
        assert ran.returncode == 2, ran.stderr
        assert f"is a symbolic link made by {attacker} (uid {pwd.getpwnam(attacker).pw_uid}), " \
               f"not by you" in ran.stderr
    assert precious.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "p.txt", "precious.txt"]
    as_user(attacker, "rm", str(out))
    ran = hpc_chat("batch", str(prompts), "-o", str(out), *config, home=tmp_path / "home")
    assert ran.returncode == 0, ran.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"  # prompts inside: only the victim's
    assert [json.loads(x)["ok"] for x in out.read_text().splitlines()] == [True, True]


@pytest.mark.parsl
def test_an_engine_socket_directory_taken_first_does_not_stop_the_run(attacker, shared,
                                                                       tmp_path):
    """The attacker creates the victim's $TMPDIR/hpc_chat-UID (open to all) before the victim
    runs: the victim's workers meet at a private directory of the victim's own instead, the
    answer comes, and nothing of the victim's lands in the attacker's directory."""
    taken = shared / f"hpc_chat-{os.getuid()}"
    as_user(attacker, "mkdir", "-m", "0777", str(taken))
    ran = hpc_chat("ask", "--config", str(FIXTURES / "workflows" / "fast.yml"), "--model",
                   "echo", "-q", "answered anyway", home=tmp_path / "home",
                   env={"TMPDIR": str(shared)})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "answered anyway"
    assert list(taken.iterdir()) == []
    own = [p for p in shared.glob(f"hpc_chat-{os.getuid()}-*") if p.stat().st_uid == os.getuid()]
    assert len(own) == 1 and oct(own[0].stat().st_mode & 0o777) == "0o700"


# ------------------------------------------------------------------ the token hub, attacked
LISTENER = """
import os, socket, sys, time
port, record = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.bind(("127.0.0.1", port))
s.listen(8)
s.settimeout(1.0)
open(record + ".port", "w").write(str(s.getsockname()[1]))
got, deadline = b"", time.monotonic() + 300  # until the test says stop: a bound, not a pace
while time.monotonic() < deadline and not os.path.exists(record + ".stop"):
    try:
        conn, _ = s.accept()
    except OSError:
        continue
    conn.settimeout(2.0)
    try:
        while True:
            piece = conn.recv(65536)
            if not piece:
                break
            got += piece
            conn.sendall(b'{"ok": true}\\n')  # what a hub would say
    except OSError:
        pass
    conn.close()
    open(record, "wb").write(got)
"""


def listening_port(listener: subprocess.Popen, record: Path) -> int:
    """The port the other user's listener has bound (it writes it beside its record)."""
    port_file = record.with_name(record.name + ".port")
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text()):
        assert listener.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return int(port_file.read_text())


FLOOD = """
import os, socket, ssl, sys, time
port, count, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # anyone can shake hands
held, deadline = [], time.monotonic() + 300  # until the test says stop: a bound, not a pace
while time.monotonic() < deadline and not os.path.exists(stop):
    while len(held) < count and time.monotonic() < deadline:
        try:
            held.append(tls.wrap_socket(socket.create_connection(("127.0.0.2", port), 1)))
        except OSError:
            break
    time.sleep(0.2)
    for c in held[:count // 4]:  # the hub drops silent ones after 5 s: come again
        c.close()
    held = held[count // 4:]
"""


class Hub:
    """A real token hub on its own event loop thread, listening on 127.0.0.2 only."""

    def __init__(self, addresses: list[str]):
        import asyncio
        import threading

        from hpc_chat.driver.token_hub import TokenHub

        self.loop = asyncio.new_event_loop()
        self.errors: list[dict] = []  # what escaped a connection's handler
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.hub = TokenHub()
        self.run(self.hub.start("127.0.0.2", addresses))

    def run(self, coro, timeout: float = 30):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open(self):
        async def opened():
            return self.hub.open()
        return self.run(opened())

    def text(self, stream, timeout: float = 10) -> str:
        import asyncio

        return self.run(asyncio.wait_for(stream.queue.get(), timeout))

    def close(self):
        self.run(self.hub.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_a_listener_on_the_workers_loopback_gets_nothing_of_the_stream(attacker, shared):
    """A compute node's other user listens on 127.0.0.1 at the hub's port, which workers try
    first: the worker's TLS handshake fails there (not the hub's certificate), so nothing of
    the stream (secret, text, result) is sent to it, and the stream reaches the real hub."""
    from hpc_chat.worker.stream import TokenSender

    hub = Hub(["127.0.0.1", "127.0.0.2"])
    record = shared / "got"
    listener = subprocess.Popen(["runuser", "-u", attacker, "--", SYSTEM_PYTHON, "-c",
                                 LISTENER, str(hub.hub.port), str(record)])
    try:
        listening_port(listener, record)
        stream, spec = hub.open()
        sender = TokenSender(spec, [])
        assert sender("private words ") and sender("private words here")
        sender.finish("private words here", {"ok": True, "response": "private words here"})
        assert hub.text(stream).startswith("private")
        deadline = time.monotonic() + 30
        while not record.exists():  # written when its connection ended
            assert time.monotonic() < deadline, "the worker never tried the listener"
            time.sleep(0.05)
        got = record.read_bytes()
        assert got.startswith(b"\x16\x03")  # a TLS ClientHello, and nothing after it
        assert spec["secret"].encode() not in got and b"private" not in got
    finally:
        (shared / "got.stop").touch()
        listener.wait(30)
        hub.close()


def test_a_flood_of_idle_connections_costs_streams_never_answers(attacker, shared):
    """Another user holds 600 TLS connections to the hub that never say a secret (anyone can
    finish a handshake: the certificate is no secret): workers that connect meanwhile are
    never told to stop their answers, whether the hub, at its cap, refused them or not; once
    the flood ends a stream works again. A deeply nested first line is one more refused
    connection: nothing escapes the hub's handler."""
    import socket
    import ssl

    from hpc_chat.driver.token_hub import MAX_UNAUTHENTICATED
    from hpc_chat.worker.stream import TokenSender

    hub = Hub(["127.0.0.2"])
    stop = shared / "flood.stop"
    flood = subprocess.Popen(["runuser", "-u", attacker, "--", SYSTEM_PYTHON, "-c", FLOOD,
                              str(hub.hub.port), "600", str(stop)])
    try:
        for _ in range(5):
            deadline = time.monotonic() + 60
            while hub.hub._unauthenticated < MAX_UNAUTHENTICATED:  # the flood is at its cap
                assert flood.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            _, spec = hub.open()
            sender = TokenSender(spec, [])
            assert all(sender(f"word {i} " * i) for i in range(1, 20))  # never "stop"
            assert not sender.cancelled
            sender.finish("done")
    finally:
        stop.touch()
        flood.wait(60)
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    with insecure.wrap_socket(socket.create_connection(("127.0.0.2", hub.hub.port))) as bad:
        bad.sendall(b"[" * 3000 + b"\n")
        assert bad.recv(64) == b""  # closed, without an answer
    stream, spec = hub.open()
    sender = TokenSender(spec, [])
    assert sender.sock is not None, "no stream after the flood ended"
    assert sender("after the flood ")
    assert hub.text(stream) == "after the flood "
    sender.finish("after the flood")
    hub.close()
    assert hub.errors == []


def test_a_worker_the_hub_refuses_answers_on_and_one_whose_client_left_stops(monkeypatch):
    """The two answers a worker can get besides an acknowledgement: a connection the hub
    refuses (here its cap of unauthenticated connections is 0) leaves the answer running
    without a stream; a stream whose client went away while the request waited for a worker
    stops the answer at its first token (the hub says so: only it can, behind its
    certificate)."""
    from hpc_chat.driver import token_hub as tokenstream
    from hpc_chat.worker.stream import TokenSender

    hub = Hub(["127.0.0.2"])
    try:
        monkeypatch.setattr(tokenstream, "MAX_UNAUTHENTICATED", 0)
        _, spec = hub.open()
        refused = TokenSender(spec, [])
        assert refused.sock is None and refused("some text ") and not refused.cancelled
        monkeypatch.setattr(tokenstream, "MAX_UNAUTHENTICATED", 64)
        stream, spec = hub.open()

        async def client_gone():
            hub.hub.close(stream)
        hub.run(client_gone())
        late = TokenSender(spec, [])
        assert late.cancelled and late("first token ") is False
    finally:
        hub.close()


def test_a_port_squatted_by_another_user_never_gets_the_api_key(attacker, shared, tmp_path):
    """Another user listens where $HPC_CHAT_SERVER points (their 127.0.0.1:PORT): `hpc-chat
    ask` connects, sees in the kernel's table that the other end of its connection is not the
    user's, says so, and closes it: the squatter receives not a byte, the key least of all."""

    record = shared / "squat"
    squatter = subprocess.Popen(["runuser", "-u", attacker, "--", SYSTEM_PYTHON, "-c",
                                 LISTENER, "0", str(record)])
    try:
        port = listening_port(squatter, record)
        home = tmp_path / "home"
        (home / "server").mkdir(parents=True, mode=0o700)
        (home / "server" / "api-key").write_text("the-users-secret-key\n")
        (home / "server" / "api-key").chmod(0o600)
        ran = hpc_chat("ask", "hello", home=home, cwd=tmp_path,
                       env={"HPC_CHAT_SERVER": f"http://127.0.0.1:{port}/v1"}, timeout=60)
        assert ran.returncode == 2, ran.stdout + ran.stderr
        assert f"the program listening at 127.0.0.1 port {port} of this host belongs to " \
               f"{attacker}" in ran.stderr and "Traceback" not in ran.stderr
        deadline = time.monotonic() + 60
        while not record.exists():  # the squatter writes what it got when the connection ends
            assert time.monotonic() < deadline, "the client never connected"
            time.sleep(0.05)
        assert record.read_bytes() == b""
    finally:
        (shared / "squat.stop").touch()
        squatter.wait(30)


IDLE = """
import os, socket, sys, time
port, count, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held, deadline = [], time.monotonic() + 300  # until the test says stop: a bound, not a pace
while time.monotonic() < deadline and not os.path.exists(stop):
    while len(held) < count:
        try:
            held.append(socket.create_connection(("127.0.0.1", port), 1))
        except OSError:
            break
    open(stop + ".held", "w").write(str(len(held)))
    time.sleep(0.2)
    held = [c for c in held if c.fileno() >= 0]
"""


@pytest.mark.parsl
def test_idle_connections_of_another_user_do_not_lock_the_tcp_server_out(attacker, shared,
                                                                         tmp_path, fixtures):
    """`serve --port` (TCP) with --max-queue 1 (uvicorn serves 65 connections at most):
    another user opens 200 connections that never send a request. The oldest waiting ones
    are pushed out as new ones come, so the server never reaches its bound: the user's
    request is answered."""
    from tests.helpers.server import start_server, stop

    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml", model="echo",
                          extra=("--max-queue", "1"))
    flag = shared / "idle.stop"
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    idle = subprocess.Popen(["runuser", "-u", attacker, "--", SYSTEM_PYTHON, "-c", IDLE,
                             str(port), "200", str(flag)])
    try:
        held = shared / "idle.stop.held"
        deadline = time.monotonic() + 60
        while not (held.exists() and held.read_text() == "200"):
            assert idle.poll() is None and time.monotonic() < deadline, "the flood stalled"
            time.sleep(0.05)
        answer = server.client().chat.completions.create(
            model="balanced_agent", messages=[{"role": "user", "content": "still served"}])
        assert answer.choices[0].message.content == "still served"
    finally:
        flag.touch()
        idle.wait(30)
        stop(server)


PROBE = """
import json, sys, urllib.error, urllib.request
base, home = sys.argv[1], sys.argv[2]
def status(method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
try:
    open(home + "/server/login-url").read()
    link = "read"
except OSError:
    link = "refused"
print(json.dumps({
    "link": link, "page": status("GET", "/"), "status": status("GET", "/v1/status"),
    "conversations": status("GET", "/v1/conversations"),
    "logins": [status("POST", "/login", {"token": "A" * 32 + str(i)}, {"X-HPC-Chat": "1"})
               for i in range(20)],
    "forged": status("GET", "/v1/models", headers={"Cookie": "; ".join(
        f"hpc_chat_session{s}={'A' * 43}" for s in ("", "_00000000"))}),
}))
"""


@pytest.mark.parsl
def test_another_user_gets_the_pages_but_no_data_no_login_link_and_no_session(
        attacker, tmp_path, fixtures):
    """`serve --port`: another user of the node can load the pages (they hold no data), but
    cannot read the login link, reaches no API route, gets no session from guessed tokens or
    a forged cookie, and their tries do not spend the user's link."""
    from tests.helpers.server import start_server, stop

    tmp_path.chmod(0o755)  # the attacker may walk to the home, not into it
    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml", model="echo")
    try:
        link = (server.home / "server" / "login-url").read_text().strip()
        probe = subprocess.run(["runuser", "-u", attacker, "--", SYSTEM_PYTHON, "-c", PROBE,
                                server.url.removesuffix("/v1"), str(server.home)],
                               capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr
        got = json.loads(probe.stdout)
        assert got == {"link": "refused", "page": 200, "status": 401, "conversations": 401,
                       "logins": [403] * 20, "forged": 401}, got
        assert (server.home / "server" / "login-url").read_text().strip() == link
        token = link.rsplit("token=", 1)[1]
        request = urllib.request.Request(server.url.removesuffix("/v1") + "/login",
                                         data=json.dumps({"token": token}).encode(),
                                         headers={"X-HPC-Chat": "1",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:  # still the user's
            assert answer.status == 200 and "hpc_chat_session_" in answer.headers["set-cookie"]
    finally:
        stop(server)
