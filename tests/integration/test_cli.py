"""The hpc-chat CLI: CliRunner for the commands, a real subprocess for kill-and-resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from hpc_chat.cli import cli
from hpc_chat.util.paths import hpc_chat_home

pytestmark = [pytest.mark.model, pytest.mark.parsl]


@pytest.fixture(scope="module")
def fast(fixtures) -> str:
    return str(fixtures / "workflows" / "fast.yml")


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_and_version():
    assert "batch" in invoke("--help").output
    assert invoke("--version").output.strip() == "hpc-chat, version 0.1.0"
    out = subprocess.run([sys.executable, "-m", "hpc_chat", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "Multi-agent chat" in out.stdout


def test_ask_json_and_conversation_history(fast):
    result = invoke("ask", "Explain why ice floats.", "--config", fast, "--json",
                    "--conversation", "cli-test")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] and data["agents"] == ["analytical_agent"] and data["response"]
    listing = invoke("history", "--json")
    assert any(c["name"] == "cli-test" and c["messages"] == 2
               for c in json.loads(listing.output))
    shown = invoke("history", "cli-test")
    assert "Explain why ice floats." in shown.output
    assert invoke("history", "no-such-conversation").exit_code == 2


def test_bad_config_is_exit_2_without_traceback(fixtures, tmp_path):
    bad = tmp_path / "wf.yml"
    bad.write_text("config:\n  agents: []\n  executor: {max_workers: 0}\n")
    result = CliRunner().invoke(cli, ["ask", "hi", "--config", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: config.executor.max_workers: Input should be greater than or equal to 1" \
        in result.output
    assert "Traceback" not in result.output


def test_unknown_site_is_exit_2(fast):
    result = CliRunner().invoke(cli, ["ask", "hi", "--config", fast, "--site", "nowhere"])
    assert result.exit_code == 2 and "site 'nowhere' not found" in result.output


def test_batch_writes_one_line_per_input_line_and_stats(fast, fixtures, tmp_path):
    out = tmp_path / "out.jsonl"
    result = invoke("batch", str(fixtures / "batch" / "mixed.jsonl"), "-o", str(out),
                    "--config", fast)
    assert result.exit_code == 1  # some lines were bad
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 10
    by_id = {x["id"]: x for x in lines if x["ok"]}
    assert set(by_id) == {"a", "g"}
    assert all(set(x) >= {"id", "prompt", "ok", "response", "agents", "latency_s",
                          "completion_tokens", "error"} for x in lines)
    assert sum(not x["ok"] for x in lines) == 8
    again = invoke("batch", str(fixtures / "batch" / "mixed.jsonl"), "-o", str(out),
                   "--config", fast)
    assert again.exit_code == 2 and "--resume" in again.output
    stats = invoke("stats", str(out), "--json")
    data = json.loads(stats.output)
    assert data["successful_requests"] == 2 and data["total_requests"] == 9  # a is duplicated


def test_batch_refuses_unwritable_output_before_any_work(fixtures, tmp_path, fast):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    runs = hpc_chat_home() / "runinfo"
    before = sorted(runs.iterdir()) if runs.is_dir() else []
    result = CliRunner().invoke(cli, ["batch", str(fixtures / "batch" / "mixed.jsonl"), "-o",
                                      str(blocker / "out.jsonl"), "--config", fast])
    assert result.exit_code == 2 and "cannot write the output" in result.output
    assert (sorted(runs.iterdir()) if runs.is_dir() else []) == before  # Parsl never started


def test_killed_batch_resumes_and_answers_each_prompt_once(fast, tmp_path):
    """16 answers of 1.5 s (the echo model) on 2 workers; the kill lands after 3."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Give me fact number {i} about the moon.\n" for i in range(16)))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "hpc_chat", "batch", str(prompts), "-o", str(out),
           "--config", fast, "--model", "echo?tokens=10&token_s=0.15"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, no chance to clean up
    proc.wait()
    first = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    assert 3 <= len(first) < 16, "the kill should land mid-batch"
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resume: {len(first)} of 16 prompts already answered" in done.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    answered = Counter(x["id"] for x in lines if x["ok"])
    assert sorted(answered) == list(range(1, 17))
    assert set(answered.values()) == {1}


def test_prompt_longer_than_the_context_fails_its_line_only(fast, tmp_path):
    prompts = tmp_path / "in.jsonl"
    prompts.write_text(json.dumps({"id": "huge", "prompt": "word " * 3000}) + "\n"
                       + json.dumps({"id": "fine", "prompt": "Say hi."}) + "\n")
    out = tmp_path / "out.jsonl"
    result = invoke("batch", str(prompts), "-o", str(out), "--config", fast)
    assert result.exit_code == 1
    lines = {x["id"]: x for x in map(json.loads, out.read_text().splitlines())}
    assert lines["fine"]["ok"]
    assert not lines["huge"]["ok"]
    assert "context window of 2048 tokens" in lines["huge"]["error"]
    # hopeless, so never retried: 1 task done, 1 failed, 0 retries in the summary table
    assert re.search(r"tasks done / failed / retried\s*│\s*1 / 1 / 0", result.output), \
        result.output


def test_a_small_batch_starts_only_the_workers_it_can_use(fast, tmp_path):
    """The workflow allows two workers; a one-line batch asked of one agent can keep only one
    busy, so its pool starts one (hpc_chat.driver.pool_size), and the line is answered."""
    src, out, summary = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "s.json"
    src.write_text(json.dumps({"id": "one", "prompt": "Say hi."}) + "\n")
    result = invoke("batch", str(src), "-o", str(out), "--config", fast, "--model", "echo",
                    "--server", "off", "--summary-json", str(summary))
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["ok"] for x in out.read_text().splitlines()] == [True]
    assert json.loads(summary.read_text())["parsl"]["active_workers"] == 1


def test_ask_and_embed_size_their_pools_to_what_they_ask(fast, tmp_path, monkeypatch):
    """A question asked of one agent, or two; a corpus of 3 texts (one slice): the executor is
    built with as many workers at most (the batch test above shows the pool honouring it)."""
    import hpc_chat.driver.workflow as workflow_module

    built, real = [], workflow_module.make_executor

    def recording(*args, **kwargs):
        built.append(kwargs["most_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(workflow_module, "make_executor", recording)
    for agents in ("balanced_agent", "creative_agent,balanced_agent"):
        result = invoke("ask", "Say hi.", "--config", fast, "--model", "echo", "--json",
                        "--server", "off", "--agents", agents)
        assert result.exit_code == 0 and json.loads(result.output)["ok"], result.output
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one\ntwo\nthree\n")
    result = invoke("embed", str(corpus), "-o", str(tmp_path / "v.jsonl"), "--config", fast,
                    "--agent", "balanced_agent")
    assert result.exit_code == 0, result.output
    assert built == [1, 2, 1]


def test_task_size_sets_the_requests_each_parsl_task_carries(fast, tmp_path):
    """The workflow sends each request alone (batch_size 1); --task-size 3 groups six prompts
    that arrive together into two tasks, and each prompt is answered once. With a Globus
    Compute endpoint (each request its own task) the option is refused, naming what to do."""
    src, out, summary = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "s.json"
    src.write_text("".join(json.dumps({"id": i, "prompt": f"prompt {i}"}) + "\n"
                           for i in range(6)))
    result = invoke("batch", str(src), "-o", str(out), "--config", fast, "--model", "echo",
                    "--task-size", "3", "--server", "off", "--summary-json", str(summary))
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["id"] for x in lines if x["ok"]) == list(range(6))
    assert json.loads(summary.read_text())["parsl"]["submitted_tasks"] == 2
    refused = invoke("batch", str(src), "-o", str(tmp_path / "o2.jsonl"), "--task-size", "3",
                     "--endpoint", "11111111-2222-3333-4444-555555555555")
    assert refused.exit_code == 2 and "leave --task-size out" in refused.output
