"""Nothing outlives its driver on the real Slurm: pilot jobs are cancelled, not left to their
walltime, whether the driver's watchdog sees it die, the next run finds its ledger, or
`hpc-chat cancel` ends the driver's own job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from tests.helpers.procs import processes_of_home, wait_until_none_of_home
from tests.helpers.runs import ledger, start_batch

from .conftest import squeue_ids, wait_until

LEFTOVER_LIMIT_S = 120


def wait_for_pilot_job(home, timeout: float = 120) -> dict:
    def listed():
        entry = ledger(home)
        return entry if entry.get("jobs") and entry.get("interchange_pid") else None
    return wait_until(listed, timeout, "the pilot job in the run's ledger")


def test_a_driver_killed_alone_has_its_pilot_job_cancelled(tmp_path, fixtures):
    home = tmp_path / "home"
    proc, _ = start_batch(tmp_path, fixtures, home, site="local-slurm")
    entry = wait_for_pilot_job(home)
    job = entry["jobs"][0]["id"]
    assert job in squeue_ids()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_until(lambda: job not in squeue_ids(), LEFTOVER_LIMIT_S,
               f"pilot job {job} to be cancelled after its driver died", interval=1)
    assert wait_until_none_of_home(home, 30, (entry["interchange_pid"],)) == {}
    assert ledger(home) == {}


def test_the_next_run_cancels_what_a_driver_without_watchdog_left(tmp_path, fixtures):
    """Driver and watchdog killed together: the pilot job keeps running until the next run on
    this host starts; that run cancels it, resumes the batch and answers every prompt once."""
    home = tmp_path / "home"
    proc, out = start_batch(tmp_path, fixtures, home, site="local-slurm")
    entry = wait_for_pilot_job(home)
    job = entry["jobs"][0]["id"]
    for pid, cmd in processes_of_home(home).items():
        if "hpc_chat.sites.watchdog" in cmd:
            os.kill(pid, signal.SIGKILL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(5)
    assert job in squeue_ids()  # left behind, as before the ledger existed
    again, _ = start_batch(tmp_path, fixtures, home, site="local-slurm",
                           extra=["--resume", "--max-tokens", "2"])
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "leftovers of a driver that died" in err and f"cancelled pilot jobs {job}" in err
    assert job not in squeue_ids()
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    answered = Counter(x["id"] for x in lines if x["ok"])
    assert len(answered) == 20 and set(answered.values()) == {1}


def test_cancel_of_a_driver_job_also_cancels_the_pilot_jobs_it_submitted(tmp_path, hpc_home):
    """A driver killed with its job cannot cancel its pilot jobs; `hpc-chat cancel` finds them
    in the ledger the driver kept. (Both jobs here are plain sleeps on the real Slurm; the
    ledger is the one such a driver leaves.)"""
    def sleep_job(name):
        return subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", f"--job-name={name}",
                               f"--output={tmp_path}/%j.log", "--wrap", "sleep 300"],
                              capture_output=True, text=True, check=True).stdout.strip()

    driver, pilot = sleep_job("hpc_chat-driver"), sleep_job("parsl.pilot")
    jobs_dir = hpc_home / "jobs"
    jobs_dir.mkdir(exist_ok=True)
    with (jobs_dir / "jobs.jsonl").open("a") as fh:
        fh.write(json.dumps({"job_id": driver, "scheduler": "slurm", "site": "local-slurm",
                             "input": str(tmp_path / "in.jsonl"),
                             "output": str(tmp_path / "out.jsonl"),
                             "log": str(tmp_path / f"{driver}.log")}) + "\n")
    runs = hpc_home / "runs"
    runs.mkdir(exist_ok=True)
    (runs / "computenode-4242.json").write_text(json.dumps({
        "host": "computenode", "pid": 4242, "start": 1, "scheduler": "slurm",
        "site": "local-slurm", "driver_job": driver, "interchange_pid": None,
        "jobs": [{"id": pilot}]}))
    done = subprocess.run([sys.executable, "-m", "hpc_chat", "cancel", driver],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"cancelled job {driver}" in done.stdout and f"cancelled pilot jobs {pilot}" \
        in done.stdout
    wait_until(lambda: not ({driver, pilot} & squeue_ids()), 60, "both jobs to end")
    assert not (runs / "computenode-4242.json").exists()


def _sleep_job(tmp_path, name: str, command: str = "sleep 300") -> str:
    return subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", f"--job-name={name}",
                           f"--output={tmp_path}/%j.log", "--wrap", command],
                          capture_output=True, text=True, check=True).stdout.strip()


def _record(home, name: str, **fields) -> "os.PathLike":
    runs = home / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{name}.json"
    path.write_text(json.dumps({"host": "computenode", "pid": 4242, "start": 1,
                                "scheduler": "slurm", "site": "local-slurm", **fields}))
    return path


def test_cleanup_finds_dead_drivers_of_other_hosts_by_their_ended_job(tmp_path, hpc_home):
    """A driver job ended with a plain `scancel` on a compute node: `hpc-chat cleanup` on the
    login node sees the driver's job has ended and cancels its pilot job; a record whose driver
    job still runs is left alone."""
    ended = _sleep_job(tmp_path, "hpc_chat-driver", "true")
    wait_until(lambda: ended not in squeue_ids(), 60, "the finished driver job to leave")
    running_driver = _sleep_job(tmp_path, "hpc_chat-driver")
    orphan, kept_pilot = _sleep_job(tmp_path, "parsl.pilot"), _sleep_job(tmp_path, "parsl.pilot")
    dead = _record(hpc_home, "computenode-4242", driver_job=ended, driver_scheduler="slurm",
                   jobs=[{"id": orphan}])
    alive = _record(hpc_home, "computenode-4343", driver_job=running_driver,
                    driver_scheduler="slurm", jobs=[{"id": kept_pilot}])
    try:
        done = subprocess.run([sys.executable, "-m", "hpc_chat", "cleanup"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"cancelled pilot jobs {orphan}" in done.stdout, done.stdout
        assert kept_pilot not in done.stdout
        wait_until(lambda: orphan not in squeue_ids(), 60, "the orphan pilot job to end")
        assert not dead.exists() and alive.exists()
        assert kept_pilot in squeue_ids()
    finally:
        subprocess.run(["scancel", running_driver, kept_pilot], check=False)


def test_a_pilot_job_that_cannot_be_cancelled_keeps_its_record(tmp_path, hpc_home):
    """scancel refuses (forced with a failing `scancel` first on PATH): the record stays and
    says why; the next cleanup, with the real scancel, cancels the job and removes it."""
    pilot = _sleep_job(tmp_path, "parsl.pilot")
    record = _record(hpc_home, "computenode-4242", driver_job="1", driver_scheduler="slurm",
                     jobs=[{"id": pilot}])
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scancel").write_text("#!/bin/sh\necho 'scancel: error: Access/permission denied'"
                                  " >&2\nexit 1\n")
    (fake / "scancel").chmod(0o755)
    try:
        env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
        stale = subprocess.run([sys.executable, "-m", "hpc_chat", "cleanup"], env=env,
                               capture_output=True, text=True, timeout=120)
        assert stale.returncode == 0, stale.stderr
        assert f"could not cancel pilot jobs {pilot} (" in stale.stdout, stale.stdout
        assert "Access/permission denied; the record is kept" in stale.stdout
        assert record.exists() and pilot in squeue_ids()
        done = subprocess.run([sys.executable, "-m", "hpc_chat", "cleanup"],
                              capture_output=True, text=True, timeout=120)
        assert f"cancelled pilot jobs {pilot}" in done.stdout, done.stdout
        assert not record.exists()
    finally:
        subprocess.run(["scancel", pilot], check=False)
