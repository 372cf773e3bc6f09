"""The Open OnDemand app (ood/): its ERB files rendered with Ruby as the dashboard renders
them, hostile form values refused before anything reaches a shell, and the whole app on the
local Slurm: OnDemand's batch connect job (tests/helpers/ood_batch_connect.sh) starts
``hpc-chat serve``, connection.yml appears, and the Connect button's link works through an
emulation of OnDemand's ``/rnode/HOST/PORT/`` proxy (tests/helpers/rnode_proxy.py).

Ruby is needed (the files are ERB) and Slurm for the last test: both skip with the reason
when missing, except that HPC_CHAT_REQUIRE_SLURM=1 (CI, which installs both) fails them."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

from tests.helpers.ood import (
    APP,
    BATCH_CONNECT,
    FORM,
    Refused,
    job_processes,
    login_link,
    processes_with_argument,
    render,
    request,
    ruby_problem,
    stage,
    submit_options,
)
from tests.helpers.rnode_proxy import RnodeProxy
from tests.slurm.conftest import skip_or_fail, slurm_problem, slurm_state, squeue_ids
from tests.slurm.conftest import wait_until as wait_for

ECHO = "echo?tokens=4&token_s=0"


@pytest.fixture
def ruby():
    skip_or_fail(ruby_problem())


@pytest.mark.usefixtures("ruby")
def test_submit_yml_is_the_basic_template_with_the_forms_nodes():
    options = submit_options({**FORM, "nodes": "3", "bc_num_hours": "12",
                              "bc_account": "proj-01", "bc_queue": "gpu_debug"})
    assert options["batch_connect"]["template"] == "basic"
    assert options["script"]["native"] == ["--nodes", "3"]


HOSTILE = [
    ("site", "x; touch {marker}"),
    ("site", "$(touch {marker})"),
    ("site", "`touch {marker}`"),
    ("site", "local\ntouch {marker}"),
    ("site", "-rf"),
    ("site", ""),
    ("model", "$(touch {marker})"),
    ("model", "m';touch {marker};'"),
    ("model", "a b"),
    ("model", "--site=elsewhere"),
    ("bc_num_hours", "1; touch {marker}"),
    ("bc_num_hours", "0"),
    ("bc_num_hours", "1.5"),
    ("nodes", "$(touch {marker})"),
    ("nodes", "-1"),
    ("nodes", ""),
    ("bc_account", "$(touch {marker})"),
    ("bc_account", "--uid=0"),
    ("bc_queue", "debug --uid=0"),
]


@pytest.mark.usefixtures("ruby")
@pytest.mark.parametrize(("field", "hostile"), HOSTILE)
def test_hostile_form_values_are_refused_before_anything_runs(tmp_path, field, hostile):
    marker = tmp_path / "pwned"
    form = {**FORM, field: hostile.format(marker=marker)}
    with pytest.raises(Refused) as refused:
        submit_options(form)
    assert f"hpc_chat: {field} " in str(refused.value)
    if field in ("site", "model"):  # the two that reach script.sh: checked there again
        with pytest.raises(Refused) as refused:
            stage(form, tmp_path / "staged")
        assert f"hpc_chat: {field} " in str(refused.value)
    assert not marker.exists()


@pytest.mark.usefixtures("ruby")
@pytest.mark.parametrize("model", [ECHO, ""])
def test_script_gives_serve_each_value_as_one_argument_and_the_token_by_environment(
        tmp_path, model):
    """script.sh with a stand-in hpc-chat that records what it was given: the model, with its
    shell characters (``?`` would glob, ``&`` would fork), arrives whole; the login token only
    in the environment."""
    staged = stage({**FORM, "site": "my-site_1.0", "model": model}, tmp_path / "staged")
    (staged / "echoXtokens=4&token_s=0").touch()  # what an unquoted ``echo?tokens...`` globs
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    record = tmp_path / "record.json"
    stand_in = venv / "bin" / "hpc-chat"
    stand_in.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        f"json.dump({{'argv': sys.argv[1:], 'token': "
                        f"os.environ.get('HPC_CHAT_LOGIN_TOKEN'), 'path': os.environ['PATH']}}, "
                        f"open({str(record)!r}, 'w'))\n")
    stand_in.chmod(0o755)
    token = "T0ken" * 6
    env = {**os.environ, "host": "node7.cluster", "port": "4321", "HPC_CHAT_LOGIN_TOKEN": token,
           "HPC_CHAT_VENV": str(venv), "HPC_CHAT_SERVE_ARGS": "--config /sw/workflow.yml"}
    done = subprocess.run(["./script.sh"], cwd=staged, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(record.read_text())
    assert seen["argv"] == [
        "serve", "--host", "0.0.0.0", "--port", "4321", "--root-path", "/rnode/node7.cluster/4321",
        "--site", "my-site_1.0", "--in-allocation",
        *(["--model", model] if model else []), "--config", "/sw/workflow.yml"]
    assert seen["token"] == token and token not in " ".join(seen["argv"])
    assert seen["path"].split(":")[0] == str(venv / "bin")


@pytest.mark.usefixtures("ruby")
def test_the_staged_session_is_valid_bash(tmp_path):
    staged = stage({**FORM, "model": ECHO}, tmp_path / "staged")
    assert sorted(p.name for p in staged.iterdir()) == ["after.sh", "before.sh", "script.sh"]
    assert os.access(staged / "script.sh", os.X_OK)
    for script in staged.iterdir():
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


@pytest.mark.usefixtures("ruby")
def test_script_says_what_to_set_when_hpc_chat_is_missing(tmp_path):
    staged = stage(FORM, tmp_path / "staged")
    env = {**os.environ, "host": "n1", "port": "4321", "HPC_CHAT_VENV": str(tmp_path / "none")}
    done = subprocess.run(["./script.sh"], cwd=staged, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "set HPC_CHAT_VENV or HPC_CHAT_MODULES" in done.stderr


@pytest.mark.usefixtures("ruby")
def test_view_links_to_the_login_under_rnode_with_the_token_escaped():
    link = login_link("c042.cluster", "40123", "abcDEF123")
    assert link == "/rnode/c042.cluster/40123/login?token=abcDEF123"
    page = render("view", APP / "view.html.erb",
                  {"host": "c042", "port": "40123", "password": 'a"b<c&d e'})
    assert 'href="/rnode/c042/40123/login?token=a%22b%3Cc%26d%20e"' in page
    assert 'a"b' not in page and "<c&d" not in page


class _Backend(BaseHTTPRequestHandler):
    """A server that sends one event, then a second once the test says so."""
    protocol_version = "HTTP/1.1"
    release = threading.Event()
    paths: list[str] = []

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Set-Cookie", "a=1; Path=/rnode/x/1/; HttpOnly")
        self.send_header("Set-Cookie", "b=2; Path=/rnode/x/1/")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in (b"data: 1\n\n", b"data: 2\n\n"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            if not self.release.wait(60):
                break
        self.wfile.write(b"0\r\n\r\n")


def test_rnode_proxy_strips_the_prefix_streams_events_and_passes_cookies():
    _Backend.release.clear()
    _Backend.paths.clear()
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = backend.server_address[1]
    try:
        with RnodeProxy(host_regex=r"127\.0\.0\.1") as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]),
                                              timeout=60)
            conn.request("GET", f"/rnode/127.0.0.1/{port}/v1/events?x=1")
            answer = conn.getresponse()
            assert answer.status == 200
            assert answer.headers.get_all("Set-Cookie") == [
                "a=1; Path=/rnode/x/1/; HttpOnly", "b=2; Path=/rnode/x/1/"]
            # The first event comes through while the backend still holds the second.
            assert answer.readline() == b"data: 1\n"
            _Backend.release.set()
            assert answer.read() == b"\ndata: 2\n\n"
            conn.close()
            assert _Backend.paths == ["/v1/events?x=1"]
            status, _, _ = request("GET", f"{proxy.url}/rnode/127.0.0.1/{port}")
            assert status == 200 and _Backend.paths[-1] == "/"
            status, _, body = request("GET", f"{proxy.url}/rnode/elsewhere/{port}/")
            assert status == 404 and b"host_regex" in body
    finally:
        _Backend.release.set()
        backend.shutdown()
        backend.server_close()


def assert_relative_links_work(url: str, page: bytes, headers: dict) -> None:
    """Every href and src of a page stays under /rnode/HOST/PORT/ (serve writes them from
    its --root-path) and answers 200 through the proxy."""
    prefix = "/" + "/".join(urlsplit(url).path.split("/")[1:4]) + "/"
    links = re.findall(r'(?:href|src|content)="([^"]*)"', page.decode())
    assert links, page
    for ref in links:
        if "=" in ref:  # the viewport's content="width=..."
            continue
        assert urlsplit(urljoin(url, ref)).path.startswith(prefix), f"{ref} leaves {prefix}"
        status, _, body = request("GET", urljoin(url, ref), headers=headers)
        assert status == 200, (ref, body)


@pytest.mark.usefixtures("ruby")
@pytest.mark.slurm
@pytest.mark.parsl
def test_the_app_on_slurm_serves_the_chat_behind_the_rnode_proxy(tmp_path, fixtures):
    """The session as OnDemand runs it: the form's values in submit.yml and the staged
    template, OnDemand's job script under sbatch, connection.yml, the Connect link through the
    /rnode/ proxy, the login, the session cookie, an API call with the cookie alone, then
    scancel, after which nothing of the job is left."""
    skip_or_fail(slurm_problem())
    form = {**FORM, "site": "local", "model": ECHO, "bc_queue": "debug"}
    staged = stage(form, tmp_path / "session")
    native = submit_options(form)["script"]["native"]
    # What OnDemand's Slurm adapter adds from bc_num_hours and bc_queue (smart attributes).
    argv = ["sbatch", "--parsable", f"--chdir={staged}", f"--output={staged}/output.log",
            f"--time={int(form['bc_num_hours']) * 60}", f"--partition={form['bc_queue']}",
            *native, str(BATCH_CONNECT)]
    env = {**os.environ, "HPC_CHAT_HOME": str(tmp_path / "home"),
           "HPC_CHAT_VENV": str(Path(sys.executable).parents[1]),
           "HPC_CHAT_SERVE_ARGS": f"--config {fixtures / 'workflows' / 'fast.yml'}"}
    job = subprocess.run(argv, env=env, capture_output=True, text=True, check=True,
                         timeout=60).stdout.strip().split(";")[0]
    log = staged / "output.log"

    def job_log() -> str:
        return log.read_text() if log.exists() else "(no output.log yet)"

    try:
        def connection():
            if slurm_state(job) not in ("PENDING", "RUNNING", "CONFIGURING"):
                raise AssertionError(f"job {job} ended: {slurm_state(job)}\n{job_log()}")
            path = staged / "connection.yml"
            return yaml.safe_load(path.read_text()) if path.exists() else None
        conn = wait_for(connection, 180, lambda: f"connection.yml (job log:\n{job_log()})")
        assert stat.S_IMODE((staged / "connection.yml").stat().st_mode) == 0o600
        host, port, password = conn["host"], int(conn["port"]), str(conn["password"])
        assert host == socket.gethostname() and re.fullmatch(r"[A-Za-z0-9]{32}", password)
        assert processes_with_argument(password) == [], "the login token is on a command line"
        assert job_processes(job), "no process of the job found by its environment"

        link = login_link(host, port, password)
        assert link == f"/rnode/{host}/{port}/login?token={password}"
        prefix = f"/rnode/{host}/{port}"
        with RnodeProxy(host_regex=re.escape(host)) as proxy:
            wait_for(lambda: request("GET", f"{proxy.url}{prefix}/health")[0] == 200, 180,
                     lambda: f"the model to load (job log:\n{job_log()})")
            status, headers, page = request("GET", proxy.url + link)
            assert status == 200 and headers["Content-Type"].startswith("text/html"), page
            assert_relative_links_work(proxy.url + link, page, {})
            # The login page POSTs the token to ./login, relative to the login link.
            assert urljoin(link, "./login") == f"{prefix}/login"
            status, headers, body = request(
                "POST", proxy.url + urljoin(link, "./login"),
                headers={"X-HPC-Chat": "1", "Content-Type": "application/json"},
                body=json.dumps({"token": password}).encode())
            assert status == 200, body
            cookies = headers.get_all("Set-Cookie") or []
            assert len(cookies) == 1 and f"Path={prefix}/;" in cookies[0] + ";", cookies
            assert "HttpOnly" in cookies[0]
            cookie = cookies[0].split(";", 1)[0]

            # Then the chat page, ./ of the login link, and what it loads.
            status, headers, page = request("GET", proxy.url + urljoin(link, "./"),
                                            headers={"Cookie": cookie})
            assert status == 200 and headers["Content-Type"].startswith("text/html"), page
            assert_relative_links_work(proxy.url + urljoin(link, "./"), page, {"Cookie": cookie})

            status, _, body = request("GET", f"{proxy.url}{prefix}/v1/models",
                                      headers={"Cookie": cookie})
            assert status == 200, body
            assert json.loads(body)["data"], body
            status, _, body = request("GET", f"{proxy.url}{prefix}/v1/models")
            assert status == 401, body  # nothing without the cookie

            status, headers, body = request(
                "POST", f"{proxy.url}{prefix}/v1/chat/completions",
                headers={"Cookie": cookie, "X-HPC-Chat": "1", "Content-Type": "application/json"},
                body=json.dumps({"model": "balanced_agent", "stream": True, "messages": [
                    {"role": "user", "content": "through the proxy"}]}).encode())
            assert status == 200, body
            assert headers["Content-Type"].startswith("text/event-stream")
            events = [line for line in body.decode().splitlines() if line.startswith("data: ")]
            assert len(events) >= 2 and events[-1] == "data: [DONE]", body
            # A real browser through the proxy, with the next link (the first is used): the
            # pages, their scripts and the streamed answer all under the prefix.
            again = (tmp_path / "home" / "server" / "login-url").read_text().strip()
            assert again.startswith(f"{prefix}/login?token=") and password not in again
            browse_through(proxy.url, again, prefix, tmp_path)
            # (a browser asks the origin for /favicon.ico by itself: OnDemand's, not ours)
            outside = [p for p in proxy.requests if not p.startswith(prefix)]
            assert set(outside) <= {"/favicon.ico"}, outside
        # The job's log is a file in the user's home, often readable by others: the login
        # token of the environment is not written there.
        assert password not in job_log(), job_log()
    finally:
        subprocess.run(["scancel", job], check=False, timeout=60)
        wait_for(lambda: job not in squeue_ids(), 120, f"job {job} to end after scancel")
        try:
            wait_for(lambda: not job_processes(job), 60, f"the processes of job {job} to end")
        except AssertionError:
            raise AssertionError(f"still running: {job_processes(job)}") from None


def browse_through(origin: str, link: str, prefix: str, tmp_path: Path) -> None:
    """Log in with ``link`` in headless Chromium, ask on the chat page, see the answer."""
    from selenium.webdriver.common.by import By

    from tests.helpers.browser import open_browser
    from tests.helpers.browser import wait_for as wait_in_browser
    from tests.integration.test_web import answered, panel_texts, send

    browser = open_browser(tmp_path)
    try:
        browser.get(origin + link)
        wait_in_browser(lambda: browser.current_url == f"{origin}{prefix}/", 60,
                        "the chat page under the prefix")
        wait_in_browser(lambda: browser.find_elements(By.CSS_SELECTOR, "#model option"), 30,
                        "the models")
        send(browser, "through the proxy in a browser", "balanced_agent")
        wait_in_browser(lambda: answered(browser) and panel_texts(browser), 120, "the answer")
        assert panel_texts(browser)[-1].startswith("through the proxy")  # (max_tokens: 4)
        # The prefix without its final slash: the page's links come from --root-path, so
        # its scripts and API calls still go under the prefix.
        browser.get(origin + prefix)
        wait_in_browser(lambda: browser.find_elements(By.CSS_SELECTOR,
                                                      "#conversations a"), 60,
                        "the conversation list at the prefix without its slash")
    finally:
        browser.quit()
