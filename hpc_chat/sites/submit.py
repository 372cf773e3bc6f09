"""The driver batch job: render it from a profile, submit it, follow it, cancel it.

Templates render in jinja2's sandbox with ``StrictUndefined`` (a missing value is an error, not
an empty string). Every value on a directive line was validated by the profile schema, every
value on a shell line goes through ``shlex.quote`` (the ``q`` filter), and scheduler commands run
as argument lists, never through a shell.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from hpc_chat.errors import HpcChatError, ProfileError, SubmitError
from hpc_chat.sites.schedulers import SCHEDULERS, JobState, JobStatus
from hpc_chat.sites.schema import SiteProfile
from hpc_chat.util.paths import home_subdir

log = logging.getLogger(__name__)

_SAFE_PATH = re.compile(r"^[A-Za-z0-9_.,@%+=/~-]+$")
SUBMIT_TIMEOUT_S = 60


def _env() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True,
                               autoescape=False)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    env.filters["comment"] = comment_text
    return env


def comment_text(value) -> str:
    """``value`` fit for a ``#`` comment line: as it is when every character prints, else as
    a JSON string (a newline in a profile's path would end the comment and start a command;
    shlex quoting does not help there, the shell never parses a comment)."""
    text = str(value)
    return text if text.isprintable() else json.dumps(text)


def _template(scheduler: str) -> str:
    name = SCHEDULERS[scheduler].driver_template
    if name is None:
        raise ProfileError(f"site uses the {scheduler} provider: there is no batch driver job to "
                           f"submit; run 'hpc-chat batch' directly")
    return resources.files("hpc_chat.sites").joinpath("templates", name).read_text()


def jobs_dir() -> Path:
    return home_subdir("jobs")


def _directive_path(path: Path, what: str) -> str:
    text = str(path)
    if not _SAFE_PATH.match(text):
        raise SubmitError(f"the {what} path {text!r} cannot go on a job script directive line "
                          f"(spaces or special characters); choose another HPC_CHAT_HOME or path")
    return text


@dataclass
class DriverJob:
    site: str
    scheduler: str
    script: str
    input: str
    output: str
    log: str
    job_id: str | None = None
    submitted_at: float | None = None


def driver_command(profile: SiteProfile, input_path: Path, output_path: Path,
                   extra_args: list[str]) -> str:
    """``hpc-chat batch ... --resume`` as a quoted shell line.

    With an environment activation in the profile, ``hpc-chat`` comes from that environment;
    without one, the driver uses this very Python (valid on compute nodes when the venv sits
    on a shared filesystem, as it must for the workers too).
    """
    program = ["hpc-chat"] if profile.driver.environment.strip() else \
        [sys.executable, "-m", "hpc_chat"]
    argv = [*program, "batch", str(input_path), "-o", str(output_path),
            "--site", profile.source, "--resume"]
    if profile.driver.mode == "allocation":
        argv.append("--in-allocation")
    return shlex.join(argv + list(extra_args))


def render_driver_script(profile: SiteProfile, input_path: str | Path, output_path: str | Path,
                         *, extra_args: list[str] | None = None,
                         job_name: str | None = None) -> DriverJob:
    """The driver job script for ``profile`` (nothing is written or submitted)."""
    inp = Path(input_path).expanduser().resolve()
    out = Path(output_path).expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", inp.stem)[:40] or "batch"
    name = job_name or f"hpc_chat-{stem}"
    log = jobs_dir() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    text = _env().from_string(_template(profile.scheduler)).render(
        site=profile.name, source=profile.source, job_name=name, d=profile.driver,
        log=_directive_path(log, "log"),
        command=driver_command(profile, inp, out, extra_args or []))
    return DriverJob(site=profile.name, scheduler=profile.scheduler, script=text,
                     input=str(inp), output=str(out), log=str(log))


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S)
    except FileNotFoundError:
        raise SubmitError(f"{argv[0]} not found: is this a login node of the site, with the "
                          f"scheduler's commands on PATH?", command=shlex.join(argv)) from None
    except subprocess.TimeoutExpired:
        raise SubmitError(f"{argv[0]} did not answer within {SUBMIT_TIMEOUT_S} s; the "
                          f"scheduler may be busy, try again later",
                          command=shlex.join(argv)) from None


def submit_driver(profile: SiteProfile, job: DriverJob) -> DriverJob:
    """Write the script next to its log and submit it; records the job for status/cancel."""
    profile.refuse_placeholders("submitting")
    script_path = Path(job.log).with_suffix(".sh")
    script_path.write_text(job.script)
    script_path.chmod(0o700)
    scheduler = SCHEDULERS[job.scheduler]
    argv = [*scheduler.submit_command, str(script_path)]
    proc = _run(argv)
    if proc.returncode != 0:
        raise SubmitError("the scheduler refused the driver job", command=shlex.join(argv),
                          retcode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
    job_id = scheduler.job_id(proc.stdout)
    if not job_id:
        raise SubmitError("no job id in the scheduler's answer", command=shlex.join(argv),
                          retcode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
    job.job_id, job.submitted_at = job_id, time.time()
    record = {**asdict(job), "script": str(script_path)}
    with (jobs_dir() / "jobs.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    return job


# What status and cancel read from each line of jobs.jsonl.
JOB_KEYS = ("job_id", "scheduler", "site", "input", "output", "log")


def recorded_jobs() -> list[dict]:
    path = jobs_dir() / "jobs.jsonl"
    if not path.exists():
        return []
    jobs = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SubmitError(f"{path}: cannot read the record of submitted jobs: "
                          f"{exc.strerror or exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            job = json.loads(line)
        except (ValueError, RecursionError):
            job = None
        if not isinstance(job, dict) or not all(
                isinstance(job.get(k), str) for k in JOB_KEYS) or \
                job["scheduler"] not in SCHEDULERS:
            log.warning("%s: line %d is not a job record of hpc-chat submit; ignored", path, n)
            continue
        jobs.append(job)
    return jobs


def find_job(job_id: str | None) -> dict:
    jobs = recorded_jobs()
    if not jobs:
        raise SubmitError("no jobs were submitted with 'hpc-chat submit' from this account "
                          f"(nothing in {jobs_dir() / 'jobs.jsonl'})")
    if job_id is None:
        return jobs[-1]
    for job in reversed(jobs):
        if job["job_id"] == job_id or job["job_id"].split(".")[0] == job_id:
            return job
    raise SubmitError(f"job {job_id} was not submitted by hpc-chat; known: "
                      f"{', '.join(j['job_id'] for j in jobs[-10:])}")


def job_state(job: dict) -> JobStatus:
    """The job's state now, with the scheduler's words for it (PENDING, RUNNING, COMPLETED,
    ...); a pending Slurm job also says why, as squeue does: ``PENDING (Priority)``."""
    scheduler = SCHEDULERS[job["scheduler"]]
    queued = _run([*scheduler.queue_command, job["job_id"]]).stdout \
        if scheduler.queue_command else ""
    state = scheduler.parse_state(queued, "")
    if state is None and scheduler.show_command:
        state = scheduler.parse_state("", _run([*scheduler.show_command, job["job_id"]]).stdout)
    if state:
        return scheduler.status(state)
    if scheduler.show_command:
        return JobStatus(JobState.MISSING, f"FINISHED (no longer known to {scheduler.name})")
    return JobStatus(JobState.UNKNOWN, f"UNKNOWN ({scheduler.queue_command[0]} gave no answer)")


def cancel_job(job: dict) -> None:
    argv = [*SCHEDULERS[job["scheduler"]].cancel_command, job["job_id"]]
    proc = _run(argv)
    if proc.returncode != 0:
        raise SubmitError(f"could not cancel job {job['job_id']}", command=shlex.join(argv),
                          retcode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


def pilot_state(scheduler: str, job_id: str) -> JobStatus:
    """The scheduler's state of a pilot job, never raising (``UNKNOWN (reason)`` instead); a
    local "job" is a process: running."""
    try:
        return job_state({"scheduler": scheduler, "job_id": job_id})
    except HpcChatError as exc:
        return JobStatus(JobState.UNKNOWN, f"UNKNOWN ({str(exc).splitlines()[0]})")
