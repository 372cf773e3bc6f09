"""`hpc-chat serve` on the real local Slurm: while the pilot job waits in the queue, status
says PENDING and /health 503; once it runs, the model loads and requests are answered; SIGTERM
ends the server and its pilot job. The pilot job is held (``#SBATCH --hold``) until the test
releases it, so it waits whatever the machine's speed and the partition's oversubscription."""

from __future__ import annotations

import signal
import subprocess

import openai

from tests.helpers.server import start_server

from .conftest import squeue_ids, wait_until


def test_serve_says_queued_then_ready_and_its_pilot_job_ends_with_it(tmp_path, fixtures):
    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml",
                          extra=("--site", str(fixtures / "sites" / "local-slurm-held.yaml")),
                          wait_ready=False)
    job = None
    try:
        def queued():
            _, state = server.get("/v1/status")
            blocks = state.get("blocks") if isinstance(state, dict) else None
            return state if blocks and blocks[0]["state"].startswith("PENDING") else None
        state = wait_until(queued, 120, "the pilot job to show as PENDING")
        assert state["state"] == "queued" and state["workers"] == 0, state
        job = state["blocks"][0]["job_id"]
        assert job in squeue_ids() and "JobHeldUser" in state["blocks"][0]["state"]
        status, health = server.get("/health", key=False)
        assert status == 503 and health["status"] == "queued"
        assert "no worker has its model loaded yet" in health["reason"]
        try:
            server.client().chat.completions.create(model="auto", messages=[
                {"role": "user", "content": "too early"}])
            raise AssertionError("answered before a worker was ready")
        except openai.InternalServerError as exc:  # 503, with Retry-After
            assert exc.status_code == 503 and exc.response.headers["retry-after"] == "5"

        subprocess.run(["scontrol", "release", job], check=True)
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
    try:
        wait_until(lambda: job not in squeue_ids(), 60, "the pilot job to end with the server")
    finally:  # only if the server did not end it: the assertion above has failed then
        subprocess.run(["scancel", str(job)], check=False)
