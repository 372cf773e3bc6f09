"""``hpc-chat embed``: a corpus in, one vector per line out in input order, on Parsl workers
(the echo model: known vectors and a known pace), killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers.cli import FIXTURES, hpc
from tests.helpers.procs import parsl_processes, wait_gone

pytestmark = pytest.mark.parsl

FAST = str(FIXTURES / "workflows" / "fast.yml")


def lines_of(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_corpus_in_input_order_with_its_bad_lines_named(tmp_path):
    texts = [f"text number {i} about clusters" for i in range(150)]
    texts[10] = ""  # an empty line: nothing to embed
    texts[70] = "word " * 2100  # longer than the context (2048)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    out, npy = tmp_path / "vectors.jsonl", tmp_path / "vectors.npy"
    done = hpc(tmp_path / "home", "embed", str(corpus), "-o", str(out), "--npy", str(npy),
               config=FAST, timeout=300)
    assert done.returncode == 1, done.stderr  # two inputs failed
    assert "150 lines written" in done.stderr and "2 failed" in done.stderr
    assert "Traceback" not in done.stderr
    lines = lines_of(out)
    assert [x["line"] for x in lines] == list(range(1, 151))  # input order
    assert [x["id"] for x in lines if x["line"] != 11] == [i for i in range(1, 151) if i != 11]
    failed = {x["line"]: x for x in lines if not x["ok"]}
    assert set(failed) == {11, 71} and failed[11]["id"] is None  # an empty line has no id
    assert "2100 tokens" in failed[71]["error"] and failed[71]["error_code"] == \
        "context_length_exceeded"
    assert failed[11]["error_kind"] == "input"
    ok = [x for x in lines if x["ok"]]
    assert all(x["dimensions"] == 64 and len(x["embedding"]) == 64 for x in ok)
    assert ok[0]["agent"] == "balanced_agent"  # the workflow's default agent
    array = np.load(npy)
    assert array.shape == (148, 64) and array.dtype == np.float32
    ids = [json.loads(x) for x in (tmp_path / "vectors.npy.ids").read_text().splitlines()]
    assert ids == [x["id"] for x in ok]
    assert np.allclose(array[0], ok[0]["embedding"], atol=1e-6)
    assert (out.stat().st_mode & 0o777) == 0o600


def test_killed_and_resumed_nothing_lost_nothing_doubled(tmp_path):
    """300 inputs at 0.05 s each (the echo pace; two workers): SIGKILL once the first slice
    of 64 is written, when at least 236 inputs (about 6 s of sleeps, at any machine speed) are
    still to do; then --resume: every id is embedded exactly once."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"text {i}\n" for i in range(300)))
    out = tmp_path / "vectors.jsonl"
    home = tmp_path / "home"
    before = parsl_processes()
    argv = [sys.executable, "-m", "hpc_chat", "embed", str(corpus), "-o", str(out),
            "--config", FAST, "--model", "echo?token_s=0.05"]
    env = {**os.environ, "HPC_CHAT_HOME": str(home)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len(out.read_bytes().splitlines()) >= 64:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    first = [x for x in lines_of(out) if x.get("ok")]
    assert 64 <= len(first) < 300
    assert wait_gone(parsl_processes() - before, timeout=60) == set()  # its watchdog's work
    again = hpc(home, "embed", str(corpus), "-o", str(out), "--resume", config=FAST,
                model="echo", timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(first)} inputs already embedded" in again.stderr
    ids = [x["id"] for x in lines_of(out) if x.get("ok")]
    assert sorted(ids) == list(range(1, 301)) and len(ids) == len(set(ids))


def test_an_existing_output_needs_resume_and_an_openai_file_is_refused(tmp_path):
    out = tmp_path / "v.jsonl"
    out.write_text('{"id": 1, "ok": true}\n')
    corpus = tmp_path / "c.txt"
    corpus.write_text("a\n")
    done = hpc(tmp_path / "home", "embed", str(corpus), "-o", str(out), config=FAST)
    assert done.returncode == 2 and "pass --resume" in done.stderr
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"custom_id": "a", "method": "POST", "url":
                                 "/v1/chat/completions", "body": {"model": "x", "messages": [
                                     {"role": "user", "content": "hi"}]}}) + "\n")
    done = hpc(tmp_path / "home", "embed", str(batch), "-o", str(tmp_path / "o.jsonl"),
               config=FAST)
    assert done.returncode == 2 and "an OpenAI batch file" in done.stderr


def test_embedding_lines_of_an_openai_batch_file_beside_chat_lines(tmp_path):
    def req(cid, url, body):
        return json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body})

    batch = tmp_path / "mixed.jsonl"
    batch.write_text("\n".join([
        req("c1", "/v1/chat/completions", {"model": "balanced_agent", "max_tokens": 8,
                                           "messages": [{"role": "user", "content": "hi"}]}),
        req("e1", "/v1/embeddings", {"model": "balanced_agent", "input": ["a b", "c d"]}),
        req("e2", "/v1/embeddings", {"model": "balanced_agent", "input": "word " * 2100}),
        req("e3", "/v1/embeddings", {"model": "balanced_agent", "input": "x",
                                     "dimensions": 8}),
        req("e4", "/v1/embeddings", {"model": "creative_agent", "input": [[1, 2, 3]],
                                     "encoding_format": "base64"}),
    ]) + "\n")
    out = tmp_path / "out.jsonl"
    done = hpc(tmp_path / "home", "batch", str(batch), "-o", str(out), "--server", "off",
               config=FAST, timeout=300)
    assert done.returncode == 1, done.stderr  # e2 and e3 failed
    answers = {x["custom_id"]: x["response"]["body"] for x in lines_of(out)}
    assert set(answers) == {"c1", "e1", "e4"}
    assert answers["c1"]["object"] == "chat.completion"
    e1 = answers["e1"]
    assert e1["object"] == "list" and [d["index"] for d in e1["data"]] == [0, 1]
    assert len(e1["data"][0]["embedding"]) == 64 and e1["usage"]["prompt_tokens"] == 4
    assert isinstance(answers["e4"]["data"][0]["embedding"], str)  # base64
    errors = {x["custom_id"]: x["response"] for x in lines_of(tmp_path / "out.errors.jsonl")}
    assert errors["e2"]["status_code"] == 400
    assert errors["e2"]["body"]["error"]["code"] == "context_length_exceeded"
    assert errors["e2"]["body"]["error"]["param"] == "body.input"
    assert errors["e3"]["body"]["error"]["param"] == "body.dimensions"
    again = hpc(tmp_path / "home", "batch", str(batch), "-o", str(out), "--resume",
                "--server", "off", config=FAST, timeout=300)  # nothing left to do
    assert len(lines_of(out)) == 3, again.stderr
