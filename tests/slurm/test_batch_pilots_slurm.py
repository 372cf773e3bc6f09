"""A Batch API batch on a Slurm pilot job of its own, from a server on the local site: the
job is submitted when the batch starts, named in the Batch object, answers every line, and
leaves the queue when the batch completes. The job is held (``#SBATCH --hold``) until the test
releases it, so the batch is seen waiting for it whatever the machine's speed."""

from __future__ import annotations

import json
import subprocess

from tests.helpers.server import start_server, stop

from .conftest import squeue_ids, wait_until


def create(client, tmp_path, lines: int, metadata: dict):
    """A chat batch of ``lines`` requests with ``metadata``."""
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps(
        {"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "balanced_agent",
                  "messages": [{"role": "user", "content": f"line {i}"}]}}) + "\n"
        for i in range(lines)))
    with src.open("rb") as fh:
        uploaded = client.files.create(file=fh, purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata=metadata)


def submitted(client, batch_id: str):
    """The Batch object once it names its pilot jobs, else None."""
    b = client.batches.retrieve(batch_id)
    pilots = (b.model_extra.get("hpc_chat") or {}).get("pilot_jobs") or {}
    return b if pilots.get("job_ids") else None


def test_a_batch_runs_on_a_slurm_pilot_job_of_its_own(tmp_path, fixtures):
    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml",
                          env={"HPC_CHAT_SITE_PATH": str(fixtures / "sites")})
    job = None
    try:
        client = server.client()
        batch = create(client, tmp_path, 6, {"hpc_chat_site": "local-slurm-held",
                                             "hpc_chat_blocks": "1"})
        waiting = wait_until(lambda: submitted(client, batch.id), 120,
                             "the batch's pilot job to be submitted")
        pilots = waiting.model_extra["hpc_chat"]["pilot_jobs"]
        job = pilots["job_ids"][0]
        assert (pilots["site"], pilots["blocks"]) == ("local-slurm-held", 1)
        assert job in squeue_ids() and waiting.status == "in_progress"
        assert waiting.request_counts.completed == 0  # held: nothing can answer yet
        subprocess.run(["scontrol", "release", job], check=True)
        done = wait_until(lambda: (lambda b: b if b.status == "completed" else None)(
            client.batches.retrieve(batch.id)), 300, "the batch to complete")
        assert done.request_counts.completed == 6 and done.request_counts.failed == 0
        answers = client.files.content(done.output_file_id).text.splitlines()
        assert sorted(json.loads(x)["custom_id"] for x in answers) == [f"q{i}" for i in range(6)]
        assert all(json.loads(x)["response"]["body"]["hpc_chat"]["agents"][0]["job_id"] == job
                   for x in answers)  # answered inside the batch's own pilot job
        wait_until(lambda: job not in squeue_ids(), 60, "the pilot job to end with the batch")
    finally:
        stop(server)
        if job is not None:
            subprocess.run(["scancel", job], check=False)


def test_a_batch_cancelled_while_its_pilot_job_waits_ends_and_takes_the_job_along(
        tmp_path, fixtures):
    """Its requests wait in Parsl's queue for a job that is held: a cancel does not wait for
    them (they could never be answered); the batch is cancelled and the job leaves the
    queue."""
    server = start_server(tmp_path, fixtures / "workflows" / "fast.yml",
                          env={"HPC_CHAT_SITE_PATH": str(fixtures / "sites")})
    job = None
    try:
        client = server.client()
        batch = create(client, tmp_path, 40, {"hpc_chat_site": "local-slurm-held"})
        waiting = wait_until(lambda: submitted(client, batch.id), 120,
                             "the batch's pilot job to be submitted")
        job = waiting.model_extra["hpc_chat"]["pilot_jobs"]["job_ids"][0]
        assert job in squeue_ids()
        client.batches.cancel(batch.id)
        done = wait_until(lambda: (lambda b: b if b.status == "cancelled" else None)(
            client.batches.retrieve(batch.id)), 120, "the batch to be cancelled")
        assert done.request_counts.completed == 0 and done.output_file_id is None
        wait_until(lambda: job not in squeue_ids(), 60, "the held job to leave the queue")
    finally:
        stop(server)
        if job is not None:
            subprocess.run(["scancel", job], check=False)
