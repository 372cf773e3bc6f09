"""`hpc-chat serve` on the real local Slurm: while the pilot job waits in the queue, status
says PENDING and /health 503; once it runs, the model loads and requests are answered; SIGTERM
ends the server and its pilot job."""

from __future__ import annotations

import signal
import subprocess

from tests.integration.test_server import start_server

from .conftest import squeue_ids, wait_until


def test_serve_says_queued_then_ready_and_its_pilot_job_ends_with_it(tmp_path, fixtures):
    # Both CPUs of the node taken: the server's pilot job has to wait.
    blocker = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=2", "--job-name=hold",
                              f"--output={tmp_path}/hold.log", "--wrap", "sleep 600"],
                             capture_output=True, text=True, check=True).stdout.strip()
    try:
        wait_until(lambda: subprocess.run(["squeue", "-h", "-o", "%T", "-j", blocker],
                                          capture_output=True, text=True).stdout.strip()
                   == "RUNNING", 60, "the blocking job to run")
        server = start_server(tmp_path, fixtures / "workflows" / "fast.yml",
                              extra=("--site", "local-slurm"), wait_ready=False)
        try:
            def queued():
                status, state = server.get("/v1/status")
                blocks = state.get("blocks") if isinstance(state, dict) else None
                return state if blocks and blocks[0]["state"].startswith("PENDING") else None
            state = wait_until(queued, 120, "the pilot job to show as PENDING")
            assert state["state"] == "queued" and state["workers"] == 0
            job = state["blocks"][0]["job_id"]
            assert job in squeue_ids()
            status, health = server.get("/health", key=False)
            assert status == 503 and health["status"] == "queued"
            assert "no worker has its model loaded yet" in health["reason"]
            refused = server.client()
            try:
                refused.chat.completions.create(model="auto", messages=[
                    {"role": "user", "content": "too early"}])
                raise AssertionError("answered before a worker was ready")
            except Exception as exc:  # the SDK's InternalServerError for a 503
                assert getattr(exc, "status_code", None) == 503, exc

            subprocess.run(["scancel", blocker], check=True)
            wait_until(lambda: server.get("/health", key=False)[0] == 200, 180,
                       "the model to be loaded")
            state = wait_until(lambda: (lambda st: st if st["blocks"][0]["state"] == "RUNNING"
                                        else None)(server.get("/v1/status")[1]), 30,
                               "the status to show the pilot job RUNNING")
            assert state["state"] == "ready" and state["workers"] >= 1
            done = server.client().chat.completions.create(
                model="balanced_agent", messages=[{"role": "user", "content": "on slurm"}])
            assert done.choices[0].message.content.startswith("on slurm")
        finally:
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(120) == 0
        wait_until(lambda: job not in squeue_ids(), 60, "the pilot job to end with the server")
    finally:
        subprocess.run(["scancel", blocker], check=False)
