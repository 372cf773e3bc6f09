"""A Python script that drives hpc_chat through the design document's API has the same
protection as ``hpc-chat``: SIGKILLed at any moment, during start-up or mid-answer, it leaves
nothing running (interchange, worker pools, engines), and its run record is gone.

The kill moments are events the test sees (the interchange process exists; a worker pool runs
and the answer, 100 s long at the echo pace, is being made), never a delay it hopes to hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers.procs import processes_of_home, wait_until_none_of_home
from tests.helpers.runs import LEFTOVER_LIMIT_S, ledger, wait_for_running_workers

pytestmark = [pytest.mark.parsl]

# The design document's usage, word for word but for the print.
SCRIPT = textwrap.dedent("""\
    import asyncio
    from hpc_chat.driver.workflow import ParslChatWorkflow

    async def main():
        workflow = ParslChatWorkflow()
        await workflow.initialize("config/ParslChatWorkflow.yml")
        response = await workflow.process_user_input("Hello, explain quantum computing")
        print(response)
        await workflow.shutdown()

    asyncio.run(main())
    """)


# Two workflows in one program: the first one ends normally while the second one answers.
TWO = textwrap.dedent("""\
    import asyncio
    from hpc_chat.driver.workflow import ParslChatWorkflow

    async def main():
        first, second = ParslChatWorkflow(), ParslChatWorkflow()
        await first.initialize("config/ParslChatWorkflow.yml")
        await second.initialize("config/ParslChatWorkflow.yml")
        await first.shutdown()
        print(await second.process_user_input("Hello, explain quantum computing"))
        await second.shutdown()

    asyncio.run(main())
    """)


def start_script(tmp_path: Path, text: str = SCRIPT) -> tuple[subprocess.Popen, Path]:
    home = tmp_path / "home"
    script = tmp_path / "driver.py"
    script.write_text(text)
    env = {**os.environ, "HPC_CHAT_HOME": str(home),
           "HPC_CHAT_MODEL": "echo?tokens=400&token_s=0.25"}  # 100 s
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, home


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``, as pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) != pid or stat[0] == "Z":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(
                b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return found


def sigkill_leaves_nothing(proc: subprocess.Popen, home: Path, interchanges: list[int]) -> None:
    """SIGKILL the driver: within the CLI's bound nothing of its home is left running (nor
    its interchanges, whose titles hide their environment), and no run record."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = wait_until_none_of_home(home, LEFTOVER_LIMIT_S, tuple(interchanges))
    assert left == {}, f"still running after the kill: {left}"
    assert ledger(home) == {}


def test_a_python_driver_killed_while_parsl_starts_leaves_nothing(tmp_path):
    """Killed the moment Parsl has launched the interchange, before Parsl's start has returned
    its PID to the driver: the interchange is stopped anyway (it recorded itself)."""
    proc, home = start_script(tmp_path)
    interchange: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not interchange:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no interchange was started"
            interchange = [p for p, c in children(proc.pid).items() if "interchange" in c]
    except BaseException:
        proc.kill()
        raise
    sigkill_leaves_nothing(proc, home, interchange)
    assert not list((home / "runs").glob("*.interchange"))


def test_a_python_driver_killed_mid_answer_leaves_nothing(tmp_path):
    """Killed while its worker pool makes the answer: the watchdog the workflow started stops
    the interchange, the worker pool and the node engine, and removes the run record."""
    proc, home = start_script(tmp_path)
    try:
        entry = wait_for_running_workers(home)
        assert entry["pid"] == proc.pid
        running = processes_of_home(home, (entry["interchange_pid"],))
        assert any("hpc_chat.sites.watchdog" in c for c in running.values()), running
    except BaseException:
        proc.kill()
        raise
    sigkill_leaves_nothing(proc, home, [entry["interchange_pid"]])


def test_a_python_driver_of_two_workflows_killed_after_one_ended_leaves_nothing(tmp_path):
    """The first workflow's normal end removes its own run record only: the second one's
    record and watchdog stay, and stop its processes when the program is killed."""
    proc, home = start_script(tmp_path, TWO)
    try:
        deadline, records = time.monotonic() + 120, []
        while records[-1:] != [1] or 2 not in records or not [
                c for c in processes_of_home(home).values() if "process_worker_pool" in c]:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the second workflow never ran alone"
            found = len(list((home / "runs").glob("*.json"))) if (home / "runs").is_dir() else 0
            records += [found] if not records or records[-1] != found else []
            time.sleep(0.05)  # both workflows started, then the first one ended
        entry = ledger(home)
        assert entry["pid"] == proc.pid and entry["interchange_pid"]
    except BaseException:
        proc.kill()
        raise
    sigkill_leaves_nothing(proc, home, [entry["interchange_pid"]])
