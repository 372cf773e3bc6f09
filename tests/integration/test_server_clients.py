"""`hpc-chat ask`, `chat` and `batch` answered by a running `hpc-chat serve` (a real server
process on loopback, real Parsl workers, the echo model at a known pace): they find it through
the home they share, say so, and give what they give with workers of their own."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.cli import on_terminal
from tests.helpers.server import start_server, stop
from tests.helpers.signals import default_sigint

pytestmark = [pytest.mark.parsl]

HELD_PACE = "echo?tokens=1000&token_s=0.25"  # 250 s: longer than any step of a test


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.conftest import FIXTURES

    started = start_server(tmp_path_factory.mktemp("server"),
                           FIXTURES / "workflows" / "batched.yml")
    yield started
    stop(started)


def hpc_chat(server, *args, cwd: Path, stdin: str | None = None, timeout: float = 300):
    env = {**os.environ, "HPC_CHAT_HOME": str(server.home)}
    return subprocess.run([sys.executable, "-m", "hpc_chat", *args], env=env, cwd=cwd,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def tasks_submitted(server) -> int:
    return server.get("/v1/status")[1]["requests"]["parsl_tasks_submitted"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_answers_through_the_server_and_resumes(server, tmp_path):
    """A JSONL batch goes to the server's warm workers (its Parsl task count grows, no worker
    of the batch's own starts); every answer has its provenance and the server's URL; a
    resumed run asks only the new prompts. An OpenAI batch file keeps its own bodies, and a
    line naming a model the server does not have fails on its input (404 in the errors file)."""
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"prompt {i}"}) + "\n"
                               for i in range(6)))
    before = tasks_submitted(server)
    done = hpc_chat(server, "batch", str(prompts), "-o", "out.jsonl", "--max-tokens", "4",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"answering through the server at {server.url}" in done.stderr
    assert "parsl tasks" not in done.stderr  # no Parsl of its own: no Parsl rows in the summary
    out = lines(tmp_path / "out.jsonl")
    assert {o["id"]: o["response"] for o in out} == {i: f"prompt {i} prompt {i}"
                                                    for i in range(6)}
    assert all(o["ok"] and o["completion_tokens"] == 4 and o["agents"] for o in out)
    assert {o["provenance"]["server"] for o in out} == {server.url}
    assert all(o["provenance"]["agents"][0]["sampling"]["max_tokens"] == 4 for o in out)
    assert tasks_submitted(server) > before

    with prompts.open("a") as more:
        more.write(json.dumps({"id": 6, "prompt": "prompt 6"}) + "\n")
    again = hpc_chat(server, "batch", str(prompts), "-o", "out.jsonl", "--resume",
                     "--max-tokens", "4", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "6 of 7 prompts already answered" in again.stderr
    assert sorted(o["id"] for o in lines(tmp_path / "out.jsonl")) == list(range(7))

    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(
        {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "max_tokens": 3, "user": "one-user", "messages": [
             {"role": "system", "content": "Repeat."}, {"role": "user", "content": text}]}})
        + "\n" for cid, model, text in [("a", "creative_agent", "alpha"),
                                        ("b", "gpt-4", "beta"),
                                        ("c", "creative_agent", "gamma")]))
    openai = hpc_chat(server, "batch", str(requests), "-o", "answers.jsonl", cwd=tmp_path)
    assert openai.returncode == 1, openai.stderr
    answer, third = sorted(lines(tmp_path / "answers.jsonl"), key=lambda a: a["custom_id"])
    assert answer["custom_id"] == "a" and third["custom_id"] == "c"
    body = answer["response"]["body"]
    assert body["choices"][0]["message"]["content"] == "alpha alpha alpha"
    assert body["model"] == "creative_agent"
    assert body["hpc_chat"]["agents"][0]["messages"][0] == \
        {"role": "system", "content": "Repeat."}
    [refused] = lines(tmp_path / "answers.errors.jsonl")
    assert refused["custom_id"] == "b" and refused["response"]["status_code"] == 404
    assert "'gpt-4'" in refused["response"]["body"]["error"]["message"]
    # Each line is a request of its own, as with the batch's own workers: its `user` is not
    # a conversation the server stores and the next line goes on from.
    assert third["response"]["body"]["hpc_chat"]["agents"][0]["messages"][1:] == \
        [{"role": "user", "content": "gamma"}]
    stored = hpc_chat(server, "history", "--json", cwd=tmp_path)
    assert "one-user" not in [c["name"] for c in json.loads(stored.stdout)]


def test_chat_through_the_server_keeps_the_conversation(server, tmp_path):
    """Turns typed into `hpc-chat chat` are answered by the server, which stores them under
    the conversation; /agents lists the server's models; --server off would not use it."""
    typed = "first turn\n/agents\nsecond turn\n/quit\n"
    done = hpc_chat(server, "chat", "--conversation", "through-server", "--agents",
                    "analytical_agent", "--max-tokens", "4", cwd=tmp_path, stdin=typed)
    assert done.returncode == 0, done.stderr
    assert f"with analytical_agent on the server at {server.url}" in done.stdout
    assert "first turn first turn" in done.stdout and "second turn second turn" in done.stdout
    assert "balanced_agent" in done.stdout and "auto" in done.stdout  # the /agents table
    assert done.stderr.count(f"answered by the server at {server.url}: analytical_agent") == 2
    stored = hpc_chat(server, "history", "through-server", "--json", cwd=tmp_path)
    turns = [(m["role"], m["content"]) for m in json.loads(stored.stdout)]
    assert turns == [("user", "first turn"), ("assistant", "first turn first turn"),
                     ("user", "second turn"), ("assistant", "second turn second turn")]
    several = hpc_chat(server, "chat", "--server", server.url, "--agents",
                       "analytical_agent,balanced_agent", cwd=tmp_path, stdin="/quit\n")
    assert several.returncode == 2
    assert "cannot be combined with several --agents" in several.stderr
    elsewhere = hpc_chat(server, "batch", "in.txt", "-o", "out.jsonl", "--server", server.url,
                         "--site", "local", cwd=tmp_path)
    assert elsewhere.returncode == 2 and "cannot be combined with --site" in elsewhere.stderr


def test_ask_through_the_server_streams_on_a_terminal(server, tmp_path, monkeypatch):
    """On a terminal the server's answer is drawn as it grows (12 tokens at 0.25 s)."""
    monkeypatch.setenv("HPC_CHAT_HOME", str(server.home))
    drawn = on_terminal(["ask", "--agents", "balanced_agent", "alpha beta"], tmp_path)
    final = " ".join(["alpha beta"] * 6)
    assert f"answered by the server at {server.url}: balanced_agent" in drawn
    assert final in drawn
    shown = set(re.findall(r"│ ((?:alpha|beta)[a-z ]*?) +│", drawn))
    partial = {text for text in shown if final.startswith(text) and text != final}
    assert len(partial) >= 3, f"no answer was shown while it grew: {shown}"


def test_a_batch_waits_out_a_full_queue(tmp_path, fixtures):
    """A server that takes 3 requests at a time and a batch of 12 sent 32 at a time: the
    refused requests (429) are asked again after Retry-After, and every prompt is answered."""
    server = start_server(tmp_path, fixtures / "workflows" / "batched.yml",
                          model="echo?tokens=4&token_s=0.25", extra=("--max-queue", "3"))
    try:
        prompts = tmp_path / "in.txt"
        prompts.write_text("".join(f"line {i}\n" for i in range(12)))
        done = hpc_chat(server, "batch", str(prompts), "-o", "out.jsonl", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert sorted(o["response"] for o in lines(tmp_path / "out.jsonl")) == \
            sorted(f"line {i} line {i}" for i in range(12))
        metrics = server.get("/metrics")[1]
        refused = re.search(r'hpc_chat_refused_total\{status="429"\} (\d+)', metrics)
        assert refused and int(refused.group(1)) > 0, "the queue bound was never reached"
    finally:
        stop(server)


LINES = 200


def test_a_batch_whose_server_stops_keeps_its_answers(tmp_path, fixtures):
    """The server is stopped (SIGTERM) while a batch of 200 runs through it: the requests in
    flight come back and are written, the batch ends with one error saying to resume, and
    `--resume --server off` answers the rest with workers of its own, each id once.

    Answers of 2 s, at most 32 in flight: the 200 need at least 7 rounds (14 s) after the first
    line is written, and the SIGTERM follows that line within one 0.05 s poll, so the batch is
    always mid-way when it lands, on any machine."""
    server = start_server(tmp_path, fixtures / "workflows" / "batched.yml",
                          model="echo?tokens=8&token_s=0.25")
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"p {i}"}) + "\n"
                               for i in range(LINES)))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "HPC_CHAT_HOME": str(server.home)}
    batch = subprocess.Popen([sys.executable, "-m", "hpc_chat", "batch", str(prompts), "-o",
                              str(out)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        _, err = batch.communicate(timeout=120)
    finally:
        stop(server)
        if batch.poll() is None:
            batch.kill()
    assert batch.returncode == 2, err
    assert "cannot be reached" in err and "rerun with --resume" in err
    assert "Traceback" not in err
    first = lines(out)
    # 32 requests were in flight when the server was told to stop: they come back, written.
    assert 16 <= len(first) < LINES and all(o["ok"] for o in first)
    rest = hpc_chat(server, "batch", str(prompts), "-o", str(out), "--resume", "--server",
                    "off", "--config", str(fixtures / "workflows" / "batched.yml"), "--model",
                    "echo?tokens=8&token_s=0.01", cwd=tmp_path)
    assert rest.returncode == 0, rest.stderr
    assert "answering through the server" not in rest.stderr
    final = lines(out)
    assert sorted(o["id"] for o in final) == list(range(LINES))
    assert all(o["response"] == " ".join([f"p {o['id']}"] * 4) for o in final)


def test_ctrl_c_in_a_chat_through_the_server_stops_the_answer_there(tmp_path, fixtures):
    """Ctrl-C while the server streams an answer into `hpc-chat chat` on a terminal: the chat
    says the answer was cancelled and goes on, and the server counts the request as cancelled
    (its connection closed, the answer stopped at the next token).

    The answer (1,000 tokens at 0.25 s: 250 s) outlasts every step of the test, each bounded
    by a 60 s wait, so the Ctrl-C always lands while it is being written, however slow the
    machine (a 3 s answer once finished first in a full suite)."""
    server = start_server(tmp_path, fixtures / "workflows" / "held.yml",
                          model=HELD_PACE)
    try:
        _ctrl_c_in_a_chat(server, tmp_path)
    finally:
        stop(server)


def _ctrl_c_in_a_chat(server, tmp_path):
    import pty

    def cancelled() -> float:
        found = re.search(r'hpc_chat_requests_total\{status="cancelled"\} ([\d.]+)',
                          server.get("/metrics")[1])
        return float(found.group(1)) if found else 0.0

    before = cancelled()
    master, slave = pty.openpty()
    env = {**os.environ, "HPC_CHAT_HOME": str(server.home), "COLUMNS": "100",
           "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "hpc_chat", "chat", "--agents",
                             "balanced_agent"], stdin=slave, stdout=slave, stderr=slave,
                            env=env, cwd=tmp_path, preexec_fn=default_sigint)
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen:
            assert time.monotonic() < deadline, seen[-1500:]
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 65536)

    try:
        read_until(b"you> ")
        os.write(master, b"slow answer please\n")
        read_until(b"slow answer please slow")  # the answer is being drawn
        proc.send_signal(signal.SIGINT)
        read_until(b"answer cancelled")
        deadline = time.monotonic() + 10
        while cancelled() <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cancelled() == before + 1
        os.write(master, b"/quit\n")
        read_until(b"bye")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert b"Traceback" not in seen
