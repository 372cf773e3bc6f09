"""The Open OnDemand app (``ood/``) as the dashboard and its batch connect job use it: ERB
files rendered with Ruby (``ood_render.rb``), the template staged into a session directory,
the job script of template "basic" (``ood_batch_connect.sh``), plain HTTP for the proxy."""

from __future__ import annotations

import html
import http.client
import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
APP = HERE.parents[1] / "ood"
RENDER = HERE / "ood_render.rb"
BATCH_CONNECT = HERE / "ood_batch_connect.sh"

# A form as the dashboard hands it over: every value a string, every attribute present.
FORM = {"site": "local", "model": "", "bc_account": "", "bc_queue": "", "bc_num_hours": "1",
        "nodes": "1", "bc_email_on_started": "0"}


class Refused(Exception):
    """A template refused a value (the dashboard shows this message and launches nothing)."""


def ruby_problem() -> str | None:
    if shutil.which("ruby"):
        return None
    return "ruby is not installed (apt-get install ruby): the ood/ templates are ERB"


def render(kind: str, path: Path, values: dict, cwd: Path | None = None) -> str:
    """``path`` rendered as the dashboard renders it (``kind``: submit, template or view)."""
    proc = subprocess.run(["ruby", str(RENDER), kind, str(path)], input=json.dumps(values),
                          capture_output=True, text=True, cwd=cwd, timeout=60)
    if proc.returncode != 0:
        raise Refused(proc.stderr.strip())
    return proc.stdout


def submit_options(form: dict) -> dict:
    """submit.yml.erb rendered and read as the dashboard reads it."""
    return yaml.safe_load(render("submit", APP / "submit.yml.erb", form))


def stage(form: dict, dest: Path) -> Path:
    """The session directory: ``template/`` copied, every ``*.erb`` rendered without its
    ``.erb``, modes kept (script.sh stays executable)."""
    shutil.copytree(APP / "template", dest)
    for erb in sorted(dest.glob("*.erb")):
        target = erb.with_suffix("")
        target.write_text(render("template", erb, form, cwd=dest))
        shutil.copymode(erb, target)
        erb.unlink()
    return dest


def login_link(host: str, port: int | str, password: str) -> str:
    """The Connect button's link of view.html.erb, for this connection.yml."""
    page = render("view", APP / "view.html.erb",
                  {"host": str(host), "port": str(port), "password": str(password)})
    start = page.index('href="') + len('href="')
    return html.unescape(page[start:page.index('"', start)])


def request(method: str, url: str, headers: dict | None = None, body: bytes | None = None,
            timeout: float = 60) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request, no proxy from the environment, no redirect followed."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path or "/", body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        conn.close()


def job_processes(job_id: str) -> list[str]:
    """Processes of this Slurm job still alive (by SLURM_JOB_ID in their environment), as
    "PID: command line"."""
    marker = f"SLURM_JOB_ID={job_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


def processes_with_argument(text: str) -> list[str]:
    """Processes whose command line holds ``text`` (what ``ps`` shows every user)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {shown}")
    return found
