"""OpenAI batch files end to end: the real model answers a mixed file, the output validates as
the openai SDK's ChatCompletion, each bad line gets its own error entry, a seeded answer
replays identically, and a killed run resumes without losing or doubling a request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from openai.types.chat import ChatCompletion

from tests.helpers.cli import hpc

pytestmark = [pytest.mark.model, pytest.mark.parsl]


def request(custom_id: str, content, model: str = "balanced_agent", **body) -> str:
    messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "messages": messages, **body}})


def read(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_a_mixed_file_gives_answers_error_entries_and_replays(tmp_path, fixtures):
    fast = str(fixtures / "workflows" / "fast.yml")
    home = tmp_path / "home"
    lines = [
        request("seeded", "Name three colours.", max_tokens=24, seed=7, temperature=0.8,
                frequency_penalty=0),
        '{"custom_id": "broken", "body": ',
        json.dumps({"custom_id": "speech", "method": "POST", "url": "/v1/audio/speech",
                    "body": {"model": "balanced_agent", "input": "hi"}}),
        json.dumps({"custom_id": "nomessages", "method": "POST",
                    "url": "/v1/chat/completions", "body": {"model": "balanced_agent"}}),
        request("toolong", "word " * 3000, max_tokens=16),
        request("unknown", "hi", model="no_such_agent"),
        request("multiturn", [{"role": "system", "content": "Answer in one word."},
                              {"role": "user", "content": "Name a colour."},
                              {"role": "assistant", "content": "Blue."},
                              {"role": "user", "content": "Another?"}],
                model="auto", max_completion_tokens=8, seed=3),
        # a format of the request's own, which replay must send again to make the same answer
        request("schema", "Name a colour.", max_tokens=64, seed=5, response_format={
            "type": "json_schema", "json_schema": {"name": "colour", "schema": {
                "type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}},
                "required": ["colour"], "additionalProperties": False}}}),
    ]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    run = hpc(home, "batch", str(batch), "-o", str(out), config=fast, model=None, timeout=600)
    assert run.returncode == 1, run.stderr  # some requests failed
    assert f"3 answers written to {out}, 5 failed requests to {tmp_path / 'out.errors.jsonl'}" \
        in " ".join(run.stderr.split())

    answers = {x["custom_id"]: x for x in read(out)}
    assert sorted(answers) == ["multiturn", "schema", "seeded"]
    for x in answers.values():
        assert x["id"].startswith("batch_req_") and x["error"] is None
        assert x["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(x["response"]["body"])
        assert completion.choices[0].message.content
        assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                                 + completion.usage.completion_tokens)
        assert completion.system_fingerprint.startswith("hpc_chat-0.1.0-")
    prov = answers["seeded"]["response"]["body"]["hpc_chat"]
    agent = prov["agents"][0]
    assert prov["site"] == "local" and agent["agent"] == "balanced_agent"
    assert prov["ignored_params"] == ["frequency_penalty"]
    assert agent["sampling"]["seed"] == 7 and agent["sampling"]["max_tokens"] == 24
    assert agent["sampling"]["temperature"] == 0.8
    assert agent["model_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and agent["model_size"] > 0
    assert len(agent["model_sha256"]) == 64 and agent["llama_cpp_python"]
    assert agent["messages"][-1] == {"role": "user", "content": "Name three colours."}
    assert agent["host"] and agent["worker"]["pid"] and agent["end"] >= agent["start"]
    usage = answers["seeded"]["response"]["body"]["usage"]  # one agent: its tokens are the line's
    assert (agent["usage"]["prompt_tokens"], agent["usage"]["completion_tokens"]) == \
        (usage["prompt_tokens"], usage["completion_tokens"])
    multi = answers["multiturn"]["response"]["body"]["hpc_chat"]["agents"][0]
    assert multi["messages"] == [{"role": "system", "content": "Answer in one word."},
                                 {"role": "user", "content": "Name a colour."},
                                 {"role": "assistant", "content": "Blue."},
                                 {"role": "user", "content": "Another?"}]

    errors = read(tmp_path / "out.errors.jsonl")
    by_line = {x["hpc_chat"]["line"]: x for x in errors}
    assert sorted(by_line) == [2, 3, 4, 5, 6]
    assert by_line[2]["custom_id"] is None and by_line[2]["response"] is None
    assert "invalid JSON" in by_line[2]["error"]["message"]

    def error_of(n):
        return by_line[n]["custom_id"], by_line[n]["response"]["status_code"], \
            by_line[n]["response"]["body"]["error"]["code"], \
            by_line[n]["response"]["body"]["error"]["param"]
    assert error_of(3) == ("speech", 404, "unsupported_url", "url")
    assert error_of(4) == ("nomessages", 400, "invalid_request", "body.messages")
    assert error_of(5) == ("toolong", 400, "context_length_exceeded", "body.messages")
    assert error_of(6) == ("unknown", 404, "model_not_found", "body.model")
    assert "balanced_agent" in by_line[6]["response"]["body"]["error"]["message"]

    again = hpc(home, "replay", str(out), "seeded", config=fast, model=None, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "balanced_agent: identical answer; same model file" in again.stderr
    content = answers["seeded"]["response"]["body"]["choices"][0]["message"]["content"]
    assert again.stdout == content + "\n"
    shaped = answers["schema"]["response"]["body"]
    assert shaped["hpc_chat"]["agents"][0]["request_format"]["response_format"]["type"] == \
        "json_schema"
    again = hpc(home, "replay", str(out), "schema", config=fast, model=None, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "balanced_agent: identical answer; same model file" in again.stderr
    assert again.stdout == shaped["choices"][0]["message"]["content"] + "\n"
    assert isinstance(json.loads(again.stdout)["colour"], str)

    stats = hpc(home, "stats", str(out), "--json", config=None, model=None)
    assert json.loads(stats.stdout)["successful_requests"] == 3, stats.stdout

    resumed = hpc(home, "batch", str(batch), "-o", str(out), "--resume", config=fast,
                  model=None, timeout=300)
    assert "3 of 8 prompts already answered" in resumed.stderr, resumed.stderr
    assert "5 unchanged lines that failed on their input" in resumed.stderr
    assert len(read(out)) == 3 and len(read(tmp_path / "out.errors.jsonl")) == 5


def test_a_repeated_custom_id_is_refused_before_anything_runs(tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join([request("a", "x"), request("b", "y"), request("a", "z")]) + "\n")
    for args in (["batch", str(batch), "-o", str(tmp_path / "out.jsonl")],
                 ["batch", "--check", str(batch)]):
        run = hpc(tmp_path / "home", *args)
        assert run.returncode == 2, run.stderr
        assert "custom_id 'a' is on line 1 and line 3" in run.stderr
        assert "Traceback" not in run.stderr
    assert not (tmp_path / "out.jsonl").exists() or not read(tmp_path / "out.jsonl")


def test_a_killed_openai_batch_resumes_without_loss_or_duplicates(tmp_path, fixtures):
    """The driver is SIGKILLed with answers written and others in flight (20 answers of 2 s on
    2 workers); --resume answers the rest; every custom_id is answered exactly once."""
    fast = str(fixtures / "workflows" / "fast.yml")
    home = tmp_path / "home"
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(request(f"r{i}", f"question {i}") + "\n" for i in range(20)))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "HPC_CHAT_HOME": str(home)}
    argv = [sys.executable, "-m", "hpc_chat", "batch", str(batch), "-o", str(out), "--config",
            fast, "--model", "echo?tokens=10&token_s=0.2"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (out.exists() and len(read(out)) >= 3):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {x["custom_id"] for x in read(out)}
    assert 3 <= len(first) < 20
    resumed = subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    answered = Counter(x["custom_id"] for x in read(out))
    assert sorted(answered) == sorted(f"r{i}" for i in range(20))
    assert set(answered.values()) == {1}, "a request was answered twice"
    assert not (tmp_path / "out.errors.jsonl").exists()
