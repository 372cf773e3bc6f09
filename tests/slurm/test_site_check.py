"""`hpc-chat sites test NAME` on the real Slurm: each stage reported in order, and a broken
compute-node environment named with the stage it failed at and the pilot job's own output."""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import squeue_ids, wait_until


def sites_test(profile, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpc_chat", "sites", "test", str(profile),
                           *args], capture_output=True, text=True, timeout=300)


def stages(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines() if re.match(r"^\s*[a-z]+ ", line)]


def test_a_pending_pilot_job_is_followed_until_workers_answer(fixtures):
    """The profile's pilot job may start only 8 s after submission: PENDING (BeginTime, with
    the expected start when Slurm gives one) is reported, then RUNNING, connected workers and
    three echo answers."""
    before = squeue_ids()
    proc = sites_test(fixtures / "sites" / "local-slurm-delayed.yaml", "--timeout", "200")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    got = stages(out)
    assert got[:2] == ["profile", "submitted"] and got[-4:] == ["answered"] * 3 + ["shutdown"]
    assert set(got[2:-5]) == {"scheduler"} and got[-5] == "workers", out
    assert "model echo?tokens=8" in out
    # Slurm knows when a job held by --begin will start: it says so
    assert re.search(r"job \d+ PENDING \(BeginTime(, expected start [\dT:-]+)?\)", out), out
    assert re.search(r"job \d+ RUNNING", out), out
    assert "answered 3/3 by " in out
    wait_until(lambda: squeue_ids() <= before, 60, "the pilot job to be cancelled")


def test_workers_that_cannot_start_fail_the_check_with_their_output(fixtures):
    proc = sites_test(fixtures / "sites" / "local-slurm-broken-workers.yaml", "--timeout",
                      "200")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"failed the pilot job \d+ ended \(FAILED\) before any worker "
                     r"connected", proc.stdout), proc.stdout
    assert "| python3.99: module not found" in proc.stdout  # worker_init's own message
    assert "answered" not in proc.stdout and "Traceback" not in proc.stderr


def test_a_refused_submission_fails_at_once_with_the_schedulers_words(fixtures, tmp_path):
    profile = tmp_path / "bad-partition.yaml"
    profile.write_text((fixtures / "sites" / "local-slurm-delayed.yaml").read_text()
                       .replace("name: local-slurm-delayed", "name: bad-partition")
                       .replace("partition: debug", "partition: nosuchpartition"))
    proc = sites_test(profile, "--timeout", "200")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the pilot job could not be submitted" in proc.stdout
    assert "nosuchpartition" in proc.stdout or "invalid partition" in proc.stdout.lower()


def test_an_unknown_site_is_a_usage_error():
    proc = sites_test("no-such-site")
    assert proc.returncode == 2 and "no-such-site" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_batch_waiting_for_its_pilot_job_says_what_the_scheduler_says(fixtures, tmp_path):
    """Piped, the progress shows plain lines: the pilot job PENDING (BeginTime) first."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    proc = subprocess.run([sys.executable, "-m", "hpc_chat", "batch", str(prompts), "-o",
                           str(tmp_path / "out.jsonl"), "--site",
                           str(fixtures / "sites" / "local-slurm-delayed.yaml"), "--model",
                           "echo", "--config", str(fixtures / "workflows" / "fast.yml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"waiting for workers: job \d+ PENDING \(BeginTime[^)]*\)", proc.stderr), \
        proc.stderr
    assert "2 results written" in proc.stderr
