"""Hardening of files and inputs, with real subprocesses where two processes meet: one writer
per output, resume after an edited input, the packaged config whatever the current directory
holds, the home's permissions, run directories, a corrupt jobs record."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_chat.errors import ConfigError
from tests.helpers.cli import FIXTURES, LOCAL, hpc


def test_two_runs_cannot_write_one_output_the_second_names_the_first(tmp_path):
    home = tmp_path / "home"
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"slow answer {i}\n" for i in range(4)))
    out = tmp_path / "out.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(out)
    env = {**os.environ, "HPC_CHAT_HOME": str(home)}
    first = subprocess.Popen([sys.executable, "-m", "hpc_chat", "batch", str(prompts), "-o",
                              str(out), "--config", LOCAL, "--model",
                              "echo?tokens=6&token_s=0.5"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "out.jsonl.lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (lock.exists() and lock.stat().st_size):
        time.sleep(0.1)
    second = hpc(home, "batch", str(prompts), "-o", str(out), "--resume")
    assert second.returncode == 2, second.stderr
    assert "another run is writing this output" in second.stderr
    assert f"pid {first.pid} on " in second.stderr and "Traceback" not in second.stderr
    through_link = hpc(home, "batch", str(prompts), "-o", str(link), "--resume")
    assert through_link.returncode == 2, through_link.stderr  # a symlink shares the lock
    assert f"pid {first.pid} on " in through_link.stderr
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == [1, 2, 3, 4]  # written once, by the first run only
    third = hpc(home, "batch", str(prompts), "-o", str(out), "--resume")  # the lock is free
    assert third.returncode == 0 and "4 of 4 prompts already answered" in third.stderr


def test_resume_after_an_edited_input_answers_only_the_new_prompt(tmp_path):
    """A line inserted at the top of a text input shifts every line number (the ids): the
    prompts answered before are found by their text and their answers copied to their new
    line numbers; only the new prompt runs. The later line of each id is the answer to its
    current prompt."""
    home = tmp_path / "home"
    prompts = tmp_path / "p.txt"
    prompts.write_text("alpha\nbravo\n")
    out = tmp_path / "out.jsonl"
    assert hpc(home, "batch", str(prompts), "-o", str(out)).returncode == 0
    prompts.write_text("new first\nalpha\nbravo\n")
    again = hpc(home, "batch", str(prompts), "-o", str(out), "--resume", "--summary-json", "-")
    assert again.returncode == 0, again.stderr
    assert "2 answered before on another line (their answers are copied" in again.stderr
    assert "1 whose prompt is not the one answered under its id (id 1:" in again.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["prompt"] for x in lines[2:]].count("new first") == 1  # one new answer only
    last = {}
    for line in lines:
        last[line["id"]] = line
    assert {i: (x["prompt"], x["response"]) for i, x in last.items()} == {
        1: ("new first", "new first"), 2: ("alpha", "alpha"), 3: ("bravo", "bravo")}
    unchanged = hpc(home, "batch", str(prompts), "-o", str(out), "--resume")
    assert "3 of 3 prompts already answered" in unchanged.stderr
    assert "not the one answered" not in unchanged.stderr


def test_a_running_drivers_run_directory_is_never_pruned(tmp_path, monkeypatch):
    """The oldest run directory belongs to a driver that still runs (this test process, per
    its run record): pruning skips it."""
    from hpc_chat.driver.executors.run_ledger import KEEP_RUNS, prepare_run_dir
    from hpc_chat.sites.ledger import LedgerEntry

    monkeypatch.setenv("HPC_CHAT_HOME", str(tmp_path / "home"))
    runinfo = tmp_path / "runinfo"
    for i in range(KEEP_RUNS + 2):
        (runinfo / f"{i:03d}").mkdir(parents=True)
    entry = LedgerEntry.for_this_driver("local", "local")
    entry.run_dir = str(runinfo / "000")
    entry.save()
    prepare_run_dir(str(runinfo))
    kept = sorted(p.name for p in runinfo.iterdir())
    assert kept == ["000"] + [f"{i:03d}" for i in range(3, KEEP_RUNS + 2)]
    entry.start = -1  # the same PID with another start time: a driver that is gone
    entry.save()
    prepare_run_dir(str(runinfo))
    assert "000" not in {p.name for p in runinfo.iterdir()}


def test_a_reused_pid_is_never_killed(tmp_path, monkeypatch):
    """A dead driver's record names an interchange and a local worker pool whose PIDs now
    belong to other processes (same PIDs, other start times; one even looks like an
    interchange): cleanup leaves both alone and still removes the record."""
    from hpc_chat.sites.ledger import LedgerEntry, clean_dead, process_start

    monkeypatch.setenv("HPC_CHAT_HOME", str(tmp_path / "home"))
    lookalike = subprocess.Popen(["bash", "-c", "exec -a 'parsl: HTEX interchange' sleep 60"])
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        time.sleep(0.3)
        entry = LedgerEntry.for_this_driver("local", "local")
        entry.pid, entry.start = lookalike.pid, process_start(lookalike.pid) - 1  # gone
        entry.interchange_pid = lookalike.pid
        entry.interchange_start = process_start(lookalike.pid) - 1
        entry.jobs = [{"id": str(other.pid), "start": process_start(other.pid) - 1}]
        entry.path = entry.path.with_name("host-1.json")
        entry.save()
        report = clean_dead()
        assert len(report) == 1 and "nothing was left running" in report[0], report
        assert lookalike.poll() is None and other.poll() is None
        assert not entry.path.exists()
    finally:
        lookalike.kill()
        other.kill()


def test_the_packaged_workflow_is_used_whatever_the_current_directory_holds(tmp_path,
                                                                          monkeypatch):
    """An untrusted checkout with its own config/ files: without --config, the packaged
    workflow and the packaged agents are loaded; with --config, the named file is."""
    from hpc_chat.driver.workflow_config import load_workflow
    from hpc_chat.util.configfile import PACKAGED_CONFIG_DIR

    hostile = tmp_path / "checkout"
    (hostile / "config").mkdir(parents=True)
    (hostile / "config" / "ParslChatWorkflow.yml").write_text("name: hostile\nconfig: {}\n")
    agent = (PACKAGED_CONFIG_DIR / "EnhancedCollaborativeAgent_1.yml").read_text()
    (hostile / "config" / "EnhancedCollaborativeAgent_1.yml").write_text(
        agent.replace("model:", "model: /tmp/hostile.gguf\n  ignored:", 1))
    monkeypatch.chdir(hostile)
    loaded = load_workflow()
    assert loaded.path == PACKAGED_CONFIG_DIR / "ParslChatWorkflow.yml"
    assert all(str(a.source).startswith(str(PACKAGED_CONFIG_DIR)) for a in loaded.agents)
    with pytest.raises(ConfigError, match="checkout/config/ParslChatWorkflow.yml"):
        load_workflow("config/ParslChatWorkflow.yml")  # named: this one, and it is invalid


def test_the_home_is_private_and_a_file_in_its_place_is_one_clear_error(tmp_path,
                                                                        monkeypatch):
    from hpc_chat.util.paths import hpc_chat_home

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    monkeypatch.setenv("HPC_CHAT_HOME", str(loose))
    assert stat.S_IMODE(hpc_chat_home().stat().st_mode) == 0o700
    new = tmp_path / "new" / "home"
    monkeypatch.setenv("HPC_CHAT_HOME", str(new))
    assert stat.S_IMODE(hpc_chat_home().stat().st_mode) == 0o700
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    result = hpc(a_file, "history", config=None, model=None)
    assert result.returncode == 2
    assert f"{a_file} (HPC_CHAT_HOME) is a file, not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_home_with_a_space_is_refused_before_workers_start(tmp_path):
    result = hpc(tmp_path / "h sp", "ask", "hi", config=None, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "contains a space or another blank" in result.stderr
    assert "HPC_CHAT_HOME" in result.stderr and "Traceback" not in result.stderr


def test_old_run_directories_are_pruned(tmp_path):
    from hpc_chat.driver.executors.run_ledger import KEEP_RUNS, prepare_run_dir

    for i in range(KEEP_RUNS + 5):
        (tmp_path / f"{i:03d}").mkdir()
    (tmp_path / "notes").mkdir()
    prepare_run_dir(str(tmp_path))
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == [f"{i:03d}" for i in range(6, KEEP_RUNS + 5)] + ["notes"]  # room for one


def test_a_corrupt_jobs_record_is_skipped_with_a_warning(tmp_path):
    home = tmp_path / "home"
    (home / "jobs").mkdir(parents=True)
    (home / "jobs" / "jobs.jsonl").write_text('{}\n[1]\n{"job_id": 5}\nnot json\n')
    result = hpc(home, "status", config=None, model=None)
    assert result.returncode == 2, result.stderr
    assert "line 1 is not a job record" in result.stderr
    assert "no jobs were submitted" in result.stderr and "Traceback" not in result.stderr


def test_an_answer_that_cannot_be_json_becomes_an_error_line_and_the_batch_goes_on(tmp_path):
    from hpc_chat.batch.input import BatchItem
    from hpc_chat.batch.output import OutputWriter

    writer = OutputWriter(tmp_path / "out.jsonl", resume=False)
    bad = writer.write(BatchItem(1, "first", 1), {"ok": True, "response": {1, 2}},
                       finished_at=1.0)
    good = writer.write(BatchItem(2, "second", 2), {"ok": True, "response": "fine"},
                        finished_at=2.0)
    writer.close()
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["ok"] for x in lines] == [False, True] and bad["ok"] is False and good["ok"]
    assert "could not be written as JSON: TypeError" in lines[0]["error"]
    assert lines[0]["error_kind"] == "runtime" and lines[1]["response"] == "fine"


def test_a_full_disk_is_one_clear_error_naming_what_was_written(tmp_path):
    """/dev/full: every write fails with ENOSPC."""
    from hpc_chat.batch.input import BatchItem
    from hpc_chat.batch.output import OutputWriter
    from hpc_chat.errors import InputError

    out = tmp_path / "out.jsonl"
    out.symlink_to("/dev/full")
    writer = OutputWriter(out, resume=True)
    with pytest.raises(InputError, match="No space left on device.*0 lines were written"):
        writer.write(BatchItem(1, "x", 1), {"ok": True, "response": "y"}, finished_at=1.0)


def test_a_broken_line_never_takes_the_id_of_a_real_line(tmp_path):
    """Ids counted from 0 and a broken line 2: the broken line's output says id null and
    line 2, so id 2's answer stays its answer over any number of resumes, and the broken
    line keeps failing (exit 1) until it is fixed."""
    home = tmp_path / "home"
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": 0, "prompt": "zero"}\n{"id": 1, "prompt": "one"\n'
                    '{"id": 2, "prompt": "two"}\n')
    out = tmp_path / "out.jsonl"
    assert hpc(home, "batch", str(data), "-o", str(out)).returncode == 1
    for _ in range(2):
        again = hpc(home, "batch", str(data), "-o", str(out), "--resume")
        assert again.returncode == 1, again.stderr  # line 2 still has no answer
        assert "2 of 3 prompts already answered, 1 unchanged lines that failed on their " \
               "input" in again.stderr
        assert "1 lines that failed in an earlier run still have no answer" in again.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3  # nothing ran again
    broken = [x for x in lines if not x["ok"]]
    assert [(x["id"], x["line"]) for x in broken] == [(None, 2)]
    stats = json.loads(hpc(home, "stats", str(out), "--json", config=None, model=None).stdout)
    assert stats["successful_requests"] == 2 and stats["failed_requests"] == 1


def test_an_engine_socket_directory_of_another_user_is_passed_over(monkeypatch):
    """$TMPDIR/hpc_chat-UID made first by someone else (here: a directory open to all, and
    a link): every worker of the node agrees on one private directory of its own instead."""
    import shutil
    import tempfile

    from hpc_chat.util import rundir

    tmp_path = Path(tempfile.mkdtemp(prefix="hcsock", dir="/tmp"))  # short: a socket's path
    monkeypatch.setattr(rundir.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    try:
        _passed_over(rundir, tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _passed_over(rundir, tmp_path):
    taken = tmp_path / f"hpc_chat-{os.getuid()}"
    taken.mkdir(mode=0o777)
    taken.chmod(0o777)
    decoy = tmp_path / f"hpc_chat-{os.getuid()}-aaaaaa"  # a look-alike, not private
    decoy.symlink_to(taken)
    first = rundir.runtime_dir()
    assert first not in (taken, decoy) and first.parent == tmp_path
    assert stat.S_IMODE(first.lstat().st_mode) == 0o700 and not first.is_symlink()
    assert rundir.runtime_dir() == first  # found again: the workers meet there
    taken.rmdir()
    assert rundir.runtime_dir() == taken  # once the name is free, the plain one


def test_a_driver_with_an_unencrypted_parsl_executor_refuses_to_start():
    """Parsl's worker port without CurveZMQ: anyone on the network could register as a
    manager. The executor refuses it, naming Parsl's version, before anything starts."""
    import asyncio

    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    from hpc_chat.driver.executors.parsl import ParslExecutor
    from hpc_chat.errors import ExecutorError
    from hpc_chat.sites.build import get_local_config

    assert all(ex.encrypted for ex in get_local_config(2).executors)  # what profiles give
    plain = Config(executors=[HighThroughputExecutor(label="plain", encrypted=False,
                                                     provider=LocalProvider())])
    executor = ParslExecutor(parsl_config=plain)
    with pytest.raises(ExecutorError, match=f"'plain' is not encrypted \\(Parsl "
                                            f"{parsl.__version__}\\)"):
        asyncio.run(executor.initialize())
    assert executor.dfk is None and executor.ledger is None


def test_a_profile_path_with_a_newline_cannot_add_a_line_to_the_driver_script(tmp_path):
    """The profile's path goes into a comment of the driver job script: a newline in it
    would end the comment and run what follows. It is written as a JSON string instead."""
    from hpc_chat.sites.registry import load_profile
    from hpc_chat.sites.submit import render_driver_script

    shipped = FIXTURES.parent.parent / "site_configs" / "local-slurm.yaml"
    evil = tmp_path / "x\ntouch PWNED\n#"
    evil.mkdir()
    (evil / "local-slurm.yaml").write_text(shipped.read_text())
    job = render_driver_script(load_profile(evil / "local-slurm.yaml"), tmp_path / "in.jsonl",
                               tmp_path / "out.jsonl")
    lines = job.script.splitlines()
    assert lines[2].startswith('# "') and lines[2].endswith('\\ntouch PWNED\\n#/local-slurm.yaml".')
    assert lines[3].startswith("# It answers every prompt")  # the header goes on as written
    ran = subprocess.run(["bash", "-n"], input=job.script, text=True, capture_output=True)
    assert ran.returncode == 0, ran.stderr
