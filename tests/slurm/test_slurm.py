"""hpc_chat on a real Slurm: pilot jobs from the login node, driver jobs, submit/status/cancel,
a walltime-style kill and resume, and PBS Pro through the emulator."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpc_chat.cli import cli
from hpc_chat.driver.workflow import ParslChatWorkflow

from .conftest import slurm_state, squeue_ids, wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def fast(fixtures) -> str:
    return str(fixtures / "workflows" / "fast.yml")


def prompts_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Name one fact about the "
                                                                  f"number {i}."}) + "\n"
                            for i in range(n)))
    return path


def answered(output: Path) -> Counter:
    lines = [json.loads(x) for x in output.read_text().splitlines() if x.strip()]
    return Counter(x["id"] for x in lines if x["ok"])


def test_login_node_driver_runs_through_slurm_pilot_jobs(fast, tmp_path):
    """SlurmProvider + SrunLauncher: the workers run inside a pilot job Parsl submitted."""
    async def go():
        wf = ParslChatWorkflow(site="local-slurm", history_path=str(tmp_path / "h.db"))
        await wf.initialize(fast)
        try:
            results = await asyncio.gather(*(
                wf.process_request(f"Name a colour, number {i}.", agents=["balanced_agent"])
                for i in range(6)))
            stats = await wf.get_parsl_stats()
            running = set(squeue_ids())
        finally:
            await wf.shutdown()
        return results, stats, running

    results, stats, running = asyncio.run(go())
    assert all(r["ok"] for r in results), [r["error"] for r in results]
    job_ids = stats["job_ids"]
    assert len(job_ids) == 1 and job_ids[0] in running  # the pilot job was a real Slurm job
    assert {r["responses"][0]["worker"]["block"] for r in results} == {"0"}
    assert stats["active_workers"] == 2
    wait_until(lambda: job_ids[0] not in squeue_ids(), 60, "the pilot job to end at shutdown")


def test_embeddings_on_slurm_pilot_jobs(fast, tmp_path):
    """A corpus embedded by the real model in a Slurm pilot job's node engine, in order."""
    from hpc_chat.driver.embeddings import embed

    texts = [f"Fact number {i} about parallel file systems." for i in range(80)]

    async def go():
        wf = ParslChatWorkflow(site="local-slurm", history_path=str(tmp_path / "h.db"))
        await wf.initialize(fast)
        try:
            out = await embed(wf, "balanced_agent", texts)
            stats = await wf.get_parsl_stats()
            running = set(squeue_ids())
        finally:
            await wf.shutdown()
        return out, stats, running

    out, stats, running = asyncio.run(go())
    assert len(out.vectors) == 80 and out.dimensions == 576 and out.pooling == "mean"
    assert len(out.tasks) == 2  # two slices of at most 64, each a task
    assert {t["worker"]["block"] for t in out.tasks} == {"0"}
    assert stats["job_ids"][0] in running  # embedded inside the pilot job
    norms = [sum(x * x for x in v) for v in out.vectors]
    assert all(abs(n - 1.0) < 1e-4 for n in norms)


@pytest.mark.parametrize("mode", ["allocation", "pilot"])
def test_sbatch_driver_script_runs_a_batch(mode, fast, tmp_path):
    prompts = prompts_file(tmp_path, 5)
    output = tmp_path / "answers.jsonl"
    log = tmp_path / "driver.log"
    export = ",".join([
        "ALL", "HPC_CHAT_SITE=local-slurm", f"HPC_CHAT_INPUT={prompts}",
        f"HPC_CHAT_OUTPUT={output}", f"HPC_CHAT_MODE={mode}",
        f"HPC_CHAT_BIN={VENV_BIN / 'hpc-chat'}", f"HPC_CHAT_ARGS=--config {fast}"])
    cpus = "2" if mode == "allocation" else "1"  # pilot: the pilot job needs the other CPU
    proc = subprocess.run(["sbatch", "--wait", f"--cpus-per-task={cpus}", f"--output={log}",
                           f"--export={export}", str(REPO / "jobs" / "driver.sh")],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, log.read_text() if log.exists() else proc.stderr
    assert sorted(answered(output)) == [f"q{i}" for i in range(5)]
    assert f"mode {mode}, site local-slurm" in log.read_text()


def test_sbatch_driver_script_answers_an_openai_batch_file(fast, tmp_path):
    """An OpenAI batch file through jobs/driver.sh: OpenAI output lines, whose provenance
    names the driver's Slurm job and node, and a failed request in the errors file."""
    from openai.types.chat import ChatCompletion

    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({
        "custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"say {cid}"}],
                 "seed": 1}}) + "\n" for cid, model in
        (("a", "balanced_agent"), ("b", "auto"), ("c", "no_such_agent"))))
    output = tmp_path / "answers.jsonl"
    log = tmp_path / "driver.log"
    export = ",".join([
        "ALL", "HPC_CHAT_SITE=local-slurm", f"HPC_CHAT_INPUT={batch}",
        f"HPC_CHAT_OUTPUT={output}", "HPC_CHAT_MODE=allocation", "HPC_CHAT_MODEL=echo",
        f"HPC_CHAT_BIN={VENV_BIN / 'hpc-chat'}", f"HPC_CHAT_ARGS=--config {fast}"])
    proc = subprocess.run(["sbatch", "--wait", "--parsable", "--cpus-per-task=2",
                           f"--output={log}", f"--export={export}",
                           str(REPO / "jobs" / "driver.sh")],
                          capture_output=True, text=True, timeout=400)
    job_id = proc.stdout.strip().split(";")[0]
    assert proc.returncode == 1, log.read_text()  # one request failed: exit 1, as documented
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == ["a", "b"]
    for x in lines:
        ChatCompletion.model_validate(x["response"]["body"])
        agent = x["response"]["body"]["hpc_chat"]["agents"][0]
        assert agent["job_id"] == job_id and agent["host"] == x["response"]["body"][
            "hpc_chat"]["driver_host"]
        assert x["response"]["body"]["hpc_chat"]["site"] == "local-slurm"
    errors = [json.loads(x) for x in (tmp_path / "answers.errors.jsonl").read_text().splitlines()]
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("c", 404)]


def test_driver_script_fails_early_without_variables(tmp_path):
    log = tmp_path / "driver.log"
    proc = subprocess.run(["sbatch", "--wait", f"--output={log}",
                           f"--export=HPC_CHAT_BIN={VENV_BIN / 'hpc-chat'}",
                           str(REPO / "jobs" / "driver.sh")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    text = " ".join(log.read_text().split())
    assert "give INPUT (or set HPC_CHAT_INPUT) and -o OUTPUT (or set HPC_CHAT_OUTPUT)" in text
    assert "Traceback" not in text


def test_submit_status_and_output(fast, tmp_path):
    prompts = prompts_file(tmp_path, 3)
    output = tmp_path / "answers.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["submit", str(prompts), "-o", str(output), "--site",
                                 "local-slurm", "--config", fast], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    job_id = result.output.split("submitted job ")[1].split()[0]
    status = runner.invoke(cli, ["status", job_id], catch_exceptions=False)
    assert job_id in status.output and "local-slurm" in status.output
    wait_until(lambda: slurm_state(job_id) in ("COMPLETED", "FAILED", "GONE"), 300,
               "the driver job to finish")
    assert slurm_state(job_id) in ("COMPLETED", "GONE")
    assert sorted(answered(output)) == ["q0", "q1", "q2"]
    final = runner.invoke(cli, ["status", job_id], catch_exceptions=False)
    assert "3/3" in final.output


def test_cancel_really_cancels(fast, tmp_path):
    """40 answers of 5 s (the echo model) on 2 workers: the job is still running when
    cancelled, however fast the machine."""
    prompts = prompts_file(tmp_path, 40)
    output = tmp_path / "answers.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["submit", str(prompts), "-o", str(output), "--site",
                                 "local-slurm", "--config", fast, "--model",
                                 "echo?tokens=10&token_s=0.5"], catch_exceptions=False)
    job_id = result.output.split("submitted job ")[1].split()[0]
    wait_until(lambda: slurm_state(job_id) == "RUNNING", 120, "the job to start")
    cancelled = runner.invoke(cli, ["cancel", job_id], catch_exceptions=False)
    assert cancelled.exit_code == 0 and f"cancelled job {job_id}" in cancelled.output
    wait_until(lambda: slurm_state(job_id) in ("CANCELLED", "GONE"), 120,
               "the job to be cancelled")
    assert job_id not in squeue_ids()
    again = runner.invoke(cli, ["cancel", job_id])
    assert again.exit_code == 1 and "already ended" in again.output
    state = json.loads(runner.invoke(cli, ["status", job_id, "--json"]).output)
    assert state["job_id"] == job_id and state["state"].startswith(("CANCELLED", "FINISHED"))


def test_driver_killed_like_a_walltime_then_resubmitted_completes(fast, tmp_path):
    """Slurm ends a job at its walltime with SIGTERM then SIGKILL; scancel does the same.
    Resubmitting the same script finishes the batch, and no prompt is answered twice.
    12 answers of 3 s (the echo model) on 2 workers: the cancel lands with work left."""
    prompts = prompts_file(tmp_path, 12)
    output = tmp_path / "answers.jsonl"
    export = ",".join(["ALL", "HPC_CHAT_SITE=local-slurm", f"HPC_CHAT_INPUT={prompts}",
                       f"HPC_CHAT_OUTPUT={output}", f"HPC_CHAT_BIN={VENV_BIN / 'hpc-chat'}",
                       "HPC_CHAT_MODEL=echo?tokens=10&token_s=0.3",
                       f"HPC_CHAT_ARGS=--config {fast}"])
    argv = ["sbatch", "--parsable", "--cpus-per-task=2", f"--output={tmp_path}/%j.log",
            f"--export={export}", str(REPO / "jobs" / "driver.sh")]
    first = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    wait_until(lambda: output.exists() and len(answered(output)) >= 2, 240,
               "some answers from the first job")
    subprocess.run(["scancel", first], check=True)
    wait_until(lambda: slurm_state(first) not in ("RUNNING", "COMPLETING", "PENDING"), 120,
               "the first job to end")
    partial = answered(output)
    assert 2 <= len(partial) < 12
    second = subprocess.run(argv[:1] + ["--wait"] + argv[1:], capture_output=True, text=True,
                            timeout=400)
    assert second.returncode == 0, second.stderr
    final = answered(output)
    assert sorted(final) == sorted(f"q{i}" for i in range(12))
    assert set(final.values()) == {1}, "a prompt was answered twice"


def test_pbspro_provider_with_mpiexec_through_the_emulator(pbs_path, fast, fixtures,
                                                           tmp_path):
    """PBSProProvider (qsub, qstat -x -f -F json) + MpiExecLauncher (MPICH's mpiexec)."""
    site = str(fixtures / "sites" / "emulated-pbspro.yaml")

    async def go():
        wf = ParslChatWorkflow(site=site, history_path=str(tmp_path / "h.db"))
        await wf.initialize(fast)
        try:
            results = await asyncio.gather(*(
                wf.process_request(f"Name a fruit, number {i}.", agents=["balanced_agent"])
                for i in range(4)))
            stats = await wf.get_parsl_stats()
        finally:
            await wf.shutdown()
        return results, stats

    results, stats = asyncio.run(go())
    assert all(r["ok"] for r in results), [r["error"] for r in results]
    assert stats["job_ids"][0].endswith(".pbs-emulator")


def test_qsub_driver_pbs_runs_a_batch(pbs_path, fast, fixtures, tmp_path):
    prompts = prompts_file(tmp_path, 3)
    output = tmp_path / "answers.jsonl"
    site = fixtures / "sites" / "emulated-pbspro.yaml"
    variables = ",".join([f"HPC_CHAT_SITE={site}", f"HPC_CHAT_INPUT={prompts}",
                          f"HPC_CHAT_OUTPUT={output}", f"HPC_CHAT_BIN={VENV_BIN / 'hpc-chat'}",
                          f"HPC_CHAT_ARGS=--config {fast}"])
    env = {**os.environ, "PATH": os.environ["PATH"]}
    job = subprocess.run(["qsub", "-v", variables, "-o", str(tmp_path / "pbs.log"),
                          str(REPO / "jobs" / "driver.pbs")], capture_output=True, text=True,
                         env=env, cwd=tmp_path, check=True).stdout.strip()

    def finished():
        out = subprocess.run(["qstat", "-x", "-f", "-F", "json", job], capture_output=True,
                             text=True, env=env).stdout
        state = json.loads(out)["Jobs"].get(job, {})
        return state if state.get("job_state") == "F" else None

    state = wait_until(finished, 300, "the PBS driver job to finish", interval=1)
    log = (tmp_path / "pbs.log").read_text()
    assert state["Exit_status"] == 0, log
    assert "hpc-chat batch: job " in log and ".pbs-emulator" in log
    assert sorted(answered(output)) == ["q0", "q1", "q2"]
