"""The CLI as Unix and LLM-tool users expect it: pipes, stdin, usage errors before any work,
counts that agree, honest truncation, resume that does not retry bad input forever.

Real subprocesses with pipes, on the in-process executor with the built-in echo model, so each
command takes about a second and nothing here depends on the machine's speed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.cli import FIXTURES, hpc
from tests.helpers.signals import default_sigint


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def test_piped_answer_is_exact_and_metadata_goes_to_stderr(home):
    question = " ".join(f"word{i}" for i in range(60))  # longer than 80 columns
    out = hpc(home, "ask", question, "--agents", "balanced_agent")
    assert out.returncode == 0, out.stderr
    assert out.stdout == question + "\n"  # not re-wrapped, nothing else on stdout
    assert "balanced_agent" in out.stderr and "tokens" in out.stderr
    raw = hpc(home, "ask", question, "--agents", "balanced_agent", "--raw")
    assert raw.stdout == question + "\n" and raw.stderr == ""


def test_ask_dash_reads_the_question_from_stdin(home):
    out = hpc(home, "ask", "-", "--agents", "balanced_agent", stdin="What is MPI?\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "What is MPI?"


@pytest.mark.parametrize("args, message", [
    (["ask", ""], "the question is empty"),
    (["ask", "x", "--agents", "nosuch_agent"], "unknown agent(s) nosuch_agent"),
    (["batch", "-", "-o", "-", "--agents", "nosuch_agent"], "unknown agent(s) nosuch_agent"),
    (["ask", "x", "--model", "echo?speed=1"], "--model: model 'echo?speed=1'"),
    (["ask", "x", "--seed", "-1"], "Invalid value for '--seed'"),
])
def test_usage_errors_exit_2_before_anything_starts(home, args, message):
    out = hpc(home, *args, stdin="", model=None, config=str(FIXTURES / "workflows" /
                                                            "fast.yml"))
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr
    assert not (home / "runinfo").exists(), "Parsl was started"


def test_truncation_is_visible(home):
    out = hpc(home, "ask", "a b c", "--agents", "balanced_agent", "--max-tokens", "3",
              model="echo?tokens=10")
    assert out.stdout == "a b c\n"
    assert "stopped at the max_tokens limit" in out.stderr
    js = json.loads(hpc(home, "ask", "a b c", "--agents", "balanced_agent", "--max-tokens", "3",
                        "--json", model="echo?tokens=10").stdout)
    assert js["finish_reason"] == "length" and js["responses"][0]["finish_reason"] == "length"
    full = json.loads(hpc(home, "ask", "a b c", "--agents", "balanced_agent", "--json").stdout)
    assert full["finish_reason"] == "stop"


def test_batch_from_stdin_to_stdout(home):
    lines = "".join(json.dumps({"id": i, "prompt": f"hello {i}"}) + "\n" for i in range(3))
    out = hpc(home, "batch", "-", "-o", "-", "--agents", "balanced_agent", stdin=lines)
    assert out.returncode == 0, out.stderr
    results = [json.loads(x) for x in out.stdout.splitlines()]
    assert sorted(r["id"] for r in results) == [0, 1, 2]
    assert all(r["ok"] and r["finish_reason"] == "stop" and r["prompt_tokens"] > 0
               for r in results)
    assert "3 results written to -" in out.stderr


def test_batch_refuses_its_input_as_output(home, tmp_path):
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"id": 1, "prompt": "hi"}) + "\n")
    out = hpc(home, "batch", str(same), "-o", str(same), "--resume")
    assert out.returncode == 2 and "the output is the input file" in out.stderr
    assert same.read_text().count("\n") == 1


def test_counts_agree_and_bad_input_is_not_retried_forever(home, tmp_path):
    inp = tmp_path / "in.jsonl"
    good = [json.dumps({"id": f"g{i}", "prompt": f"fine {i}"}) for i in range(4)]
    bad = ["{not json", json.dumps({"id": "e", "prompt": "  "}),
           json.dumps({"id": "long", "prompt": "w " * 3000})]
    inp.write_text("\n".join(good + bad) + "\n")
    out = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"
    first = hpc(home, "batch", str(inp), "-o", str(out), "--summary-json", str(summary))
    assert first.returncode == 1
    assert "7 results written" in first.stderr and "3 failed" in first.stderr
    data = json.loads(summary.read_text())
    assert (data["successful_requests"], data["failed_requests"]) == (4, 3)
    stats = json.loads(hpc(home, "stats", str(out), "--json", model=None, config=None).stdout)
    assert (stats["successful_requests"], stats["failed_requests"]) == (4, 3)
    assert stats["prompt_tokens"] > 0 and "model_loads" not in stats
    kinds = {x["id"] if x["id"] is not None else ("line", x["line"]): x["error_kind"]
             for x in map(json.loads, out.read_text().splitlines())}
    assert kinds["e"] == kinds["long"] == kinds[("line", 5)] == "input" and kinds["g0"] is None

    again = hpc(home, "batch", str(inp), "-o", str(out), "--resume")
    assert again.returncode == 1, again.stderr  # the three lines still have no answer
    assert "3 lines that failed in an earlier run still have no answer" in again.stderr
    assert "4 of 7 prompts already answered, 3 unchanged lines that failed on their input" \
        in " ".join(again.stderr.split())
    assert len(out.read_text().splitlines()) == 7  # nothing appended

    inp.write_text("\n".join(good + [json.dumps({"id": 5, "prompt": "fixed now"})] + bad[1:])
                   + "\n")
    fixed = hpc(home, "batch", str(inp), "-o", str(out), "--resume")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 8 and lines[-1]["id"] == 5 and lines[-1]["ok"], fixed.stderr


def test_stats_refuses_an_input_file(home, tmp_path):
    inp = tmp_path / "prompts.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "prompt": "p"}) + "\n" for i in range(6)))
    out = hpc(home, "stats", str(inp), model=None, config=None)
    assert out.returncode == 2 and "is this the input file?" in out.stderr


def test_batch_check_reports_every_bad_line_without_running(home, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a", "prompt": "x"}) + "\n{broken\n"
                   + json.dumps({"id": "a", "prompt": "y"}) + "\n")
    out = hpc(home, "batch", str(inp), "--check", model=None, config=None)
    assert out.returncode == 2
    assert "line 2: invalid JSON" in out.stderr and "line 3: duplicate id 'a'" in out.stderr
    assert "3 lines, 1 runnable, 2 bad" in out.stderr


def test_models_history_and_sites_for_scripts(home):
    models = json.loads(hpc(home, "models", "--json", model=None, config=None).stdout)
    names = {m["name"]: m for m in models}
    assert names["default"]["present"] and names["default"]["bytes"] > 50_000_000
    assert names["echo"]["present"] and names["echo"]["path"] is None
    assert hpc(home, "ask", "remember teal", "--conversation", "[/]").returncode == 0
    listing = hpc(home, "history", model=None, config=None)
    assert listing.returncode == 0 and "[/]" in listing.stdout  # a name is text, not markup
    export = hpc(home, "history", "export", "[/]", model=None, config=None)
    rows = [json.loads(x) for x in export.stdout.splitlines()]
    assert [r["role"] for r in rows] == ["user", "assistant"] and rows[0]["conversation"] == "[/]"
    assert hpc(home, "history", "rm", "[/]", model=None, config=None).returncode == 0
    bare = hpc(home, "history", "export", model=None, config=None)
    assert bare.returncode == 2 and "give the conversation" in bare.stderr
    gone = hpc(home, "history", "[/]", model=None, config=None)
    assert gone.returncode == 2 and "no conversation named" in gone.stderr
    sites = json.loads(hpc(home, "sites", "list", "--json", model=None, config=None).stdout)
    assert {"local", "local-slurm"} <= {s["site"] for s in sites["sites"]}
    shown = json.loads(hpc(home, "sites", "show", "local", "--json", model=None,
                           config=None).stdout)
    assert shown["profile"]["provider"]["type"] == "LocalProvider"


def test_sites_new_starts_a_profile_named_for_the_user(home):
    made = hpc(home, "sites", "new", "mycluster", "--from", "generic-slurm", model=None,
               config=None)
    assert made.returncode == 0, made.stderr
    path = home / "sites" / "mycluster.yaml"
    assert "name: mycluster" in path.read_text()
    assert "provider.account: 'YOUR_ACCOUNT'" in made.stdout
    ok = hpc(home, "sites", "validate", "mycluster", model=None, config=None)
    assert ok.returncode == 0 and "ok mycluster" in ok.stdout
    again = hpc(home, "sites", "new", "mycluster", model=None, config=None)
    assert again.returncode == 2 and "exists already" in again.stderr
    missing = hpc(home, "sites", "validate", "nosuch", model=None, config=None)
    assert missing.returncode == 2 and "error: site 'nosuch' not found" in missing.stderr
    shipped = hpc(home, "sites", "new", "local", model=None, config=None)
    assert shipped.returncode == 2 and "shipped with hpc_chat" in shipped.stderr
    assert not (home / "sites" / "local.yaml").exists()


def test_piped_render_has_short_section_lines(home):
    out = hpc(home, "sites", "render", "local-slurm", model=None, config=None)
    assert out.returncode == 0, out.stderr
    assert "--- Pilot job (written by Parsl's provider) ---" in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) < 2000  # no 100k-wide rules


def test_markup_in_a_profile_description_is_printed_as_text(home):
    (home / "sites").mkdir(parents=True)
    (home / "sites" / "odd.yaml").write_text(
        "name: odd\ndescription: 'a [/] b [bold]c'\nprovider: {type: LocalProvider}\n")
    out = hpc(home, "sites", "list", model=None, config=None)
    assert out.returncode == 0, out.stderr
    assert "a [/] b [bold]c" in out.stdout


def tasks_launched(home) -> int:
    """Parsl tasks launched so far by drivers of ``home`` (Parsl's own log, kept at INFO)."""
    return sum(log.read_text(errors="replace").count(" launched on executor ")
               for log in (home / "runinfo").rglob("parsl.log"))


@pytest.mark.parsl
def test_ctrl_c_while_answering_cancels_that_answer_and_the_chat_goes_on(home):
    """Ctrl-C once the question's Parsl task is launched cancels its answer (1,000 tokens of
    0.25 s: 250 s, longer than any step of the test), and the next command still runs."""
    env = {**os.environ, "HPC_CHAT_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "hpc_chat", "chat", "--config",
                             str(FIXTURES / "workflows" / "held.yml"),
                             "--model", "echo?tokens=1000&token_s=0.25", "--agents",
                             "balanced_agent", "--conversation", "c"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True,
                            preexec_fn=default_sigint)
    try:
        seen = ""
        deadline = time.monotonic() + 60
        while "/quit to end." not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()  # the banner: the session is ready
        launched = tasks_launched(home)
        proc.stdin.write("a long answer please\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while tasks_launched(home) == launched:  # the question is on a worker, not at input()
            assert time.monotonic() < deadline and proc.poll() is None, "never launched"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate("/agents\n", timeout=60)
    finally:
        proc.kill()
    assert "/quit to end." in seen
    assert proc.returncode == 0, err
    assert "(answer cancelled)" in err
    assert "temperature" in out  # the /agents table: the session went on after the cancel
    assert "bye" in out and "Traceback" not in err


def test_parsl_log_keeps_a_line_per_task_not_nine(tmp_path):
    """Parsl's DataFlowKernel logs nine INFO lines for every task; hpc_chat's filter keeps the
    launch line, failures, retries and everything else Parsl says, and drops the routine
    ones, unless --debug (HPC_CHAT_DEBUG) asks for all."""
    import logging

    from hpc_chat.util.logs import RoutineTaskLines, quiet_routine_task_lines

    logger = logging.getLogger("parsl.dataflow.dflow")
    installed = any(isinstance(f, RoutineTaskLines) for f in logger.filters)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for enabled in (True, False):
            quiet_routine_task_lines(enabled)
            seen.clear()
            logger.info("Task %s submitted for App %s, %s", 1, "packed_call", "not waiting")
            logger.info("Task 1 initializing state to pending",
                        extra={"parsl.task": 1, "parsl.task_state": "pending"})
            logger.info("Task 1 changing state from pending to launched",
                        extra={"parsl.task": 1, "parsl.task_state": "launched"})
            logger.info("Parsl task 1 try 0 launched on executor htex", extra={"parsl.task": 1})
            logger.info("Standard out for task 1 will not be redirected.")
            logger.info("Task 1 changing state from launched to fail_retryable",
                        extra={"parsl.task": 1, "parsl.task_state": "fail_retryable"})
            logger.info("Task 1 changing state from launched to exec_done",
                        extra={"parsl.task": 1, "parsl.task_state": "exec_done"})
            logger.warning("Task 1 standard error for task 1 will not be redirected.")
            logger.info("Parsl version: %s", "2025")
            if enabled:
                assert seen == ["Parsl task 1 try 0 launched on executor htex",
                                "Task 1 changing state from launched to fail_retryable",
                                "Task 1 standard error for task 1 will not be redirected.",
                                "Parsl version: 2025"]
            else:
                assert len(seen) == 9
    finally:
        quiet_routine_task_lines(installed)
        logger.removeHandler(handler)
        logger.setLevel(level)
