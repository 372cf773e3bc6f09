"""What hpc_chat needs to know about each batch scheduler, in one table.

Like dask-jobqueue's ``submit_command``/``cancel_command`` class attributes, each scheduler is
one :class:`Scheduler` row: its directive prefix, the driver job template, how a job is
submitted, asked about and cancelled, and what a dry-run submission answers. Code asks the row
instead of branching on the scheduler's name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class JobState(str, Enum):
    """Where a job is, in Parsl's words (``parsl.jobs.states.JobState``, by name: the CLI does
    not load Parsl to ask a scheduler); each scheduler's row translates its own words."""

    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    HELD = "HELD"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    MISSING = "MISSING"  # no longer known to the scheduler: it ran, or never will again

    @property
    def ended(self) -> bool:
        """Runs no more (Parsl's TERMINAL_STATES); any other state, UNKNOWN included, may
        still run or start."""
        return self in _ENDED


_ENDED = {JobState.COMPLETED, JobState.CANCELLED, JobState.FAILED, JobState.TIMEOUT,
          JobState.MISSING}


@dataclass(frozen=True)
class JobStatus:
    """A job's state, and the scheduler's own words for it as shown to the user:
    ``PENDING (Priority, expected start 2026-12-01T04:00)``."""

    state: JobState
    detail: str

    def __str__(self) -> str:
        return self.detail

    @property
    def ended(self) -> bool:
        return self.state.ended


def _slurm_state(queue_out: str, show_out: str) -> str | None:
    """``squeue -o "%T %S %r"``: a pending job says why, and when Slurm expects it to start
    when its scheduler has an estimate: ``PENDING (Priority, expected start 2026-12-01T04:00)``."""
    state, _, rest = queue_out.strip().partition(" ")
    if state:
        start, _, reason = rest.partition(" ")
        notes = [reason] if reason else []
        if start and start not in ("N/A", "Unknown"):
            notes.append(f"expected start {start}")
        return f"{state} ({', '.join(notes)})" if state == "PENDING" and notes else state
    match = re.search(r"JobState=(\S+)", show_out)
    return match.group(1) if match else None


PBS_STATES = {"Q": "QUEUED", "R": "RUNNING", "F": "FINISHED", "H": "HELD", "E": "EXITING"}


def _pbs_state(queue_out: str, show_out: str) -> str | None:
    try:
        job = next(iter(json.loads(queue_out)["Jobs"].values()))
        code = job["job_state"]
    except (json.JSONDecodeError, KeyError, StopIteration, TypeError, AttributeError):
        return None
    state = PBS_STATES.get(code, code)
    start = (job.get("estimated") or {}).get("start_time") if isinstance(job, dict) else None
    return f"{state} (expected start {start})" if code == "Q" and start else state


_S = JobState
# Each scheduler's words (as parse_state gives them) and the state they mean; Slurm's as
# Parsl's SlurmProvider translates them, PBS's codes as spelled out above.
SLURM_STATES = {
    "PENDING": _S.PENDING, "CONFIGURING": _S.PENDING, "REQUEUED": _S.PENDING,
    "REQUEUE_FED": _S.PENDING, "SUSPENDED": _S.HELD, "STOPPED": _S.HELD,
    "REQUEUE_HOLD": _S.HELD, "RESV_DEL_HOLD": _S.HELD, "RUNNING": _S.RUNNING,
    "COMPLETING": _S.RUNNING, "SIGNALING": _S.RUNNING, "STAGE_OUT": _S.RUNNING,
    "RESIZING": _S.RUNNING, "COMPLETED": _S.COMPLETED, "CANCELLED": _S.CANCELLED,
    "FAILED": _S.FAILED, "NODE_FAIL": _S.FAILED, "BOOT_FAIL": _S.FAILED,
    "OUT_OF_MEMORY": _S.FAILED, "REVOKED": _S.FAILED, "SPECIAL_EXIT": _S.FAILED,
    "TIMEOUT": _S.TIMEOUT, "DEADLINE": _S.TIMEOUT, "PREEMPTED": _S.TIMEOUT}
PBS_WORDS = {
    "QUEUED": _S.PENDING, "W": _S.PENDING, "T": _S.PENDING, "HELD": _S.HELD, "S": _S.HELD,
    "U": _S.HELD, "RUNNING": _S.RUNNING, "EXITING": _S.RUNNING, "B": _S.RUNNING,
    "FINISHED": _S.COMPLETED, "X": _S.COMPLETED}
LOCAL_WORDS = {"RUNNING": _S.RUNNING, "FINISHED": _S.COMPLETED}  # a worker pool's process


@dataclass(frozen=True)
class Scheduler:
    name: str
    directive_prefix: str | None      # "#SBATCH"; None: no job scripts
    driver_template: str | None       # in hpc_chat/sites/templates
    submit_command: tuple[str, ...]   # the script path is appended
    queue_command: tuple[str, ...]    # the job id is appended; its answer goes to parse_state
    show_command: tuple[str, ...]     # asked when the queue no longer lists the job
    cancel_command: tuple[str, ...]
    parse_state: Callable[[str, str], str | None]
    dry_run_answer: str               # what a submission prints (for `sites render`)
    states: dict[str, JobState]       # its words (parse_state's first) -> the state

    def status(self, words: str) -> JobStatus:
        """What the scheduler's words mean: ``PENDING (Priority)`` is PENDING."""
        return JobStatus(self.states.get(words.split(" ", 1)[0], JobState.UNKNOWN), words)

    def job_id(self, submit_stdout: str) -> str:
        """The job id in the submit command's answer (``123;cluster`` or ``123.server``)."""
        return submit_stdout.strip().split(";")[0].strip()


SCHEDULERS = {
    "slurm": Scheduler(
        "slurm", "#SBATCH", "driver.slurm.j2", ("sbatch", "--parsable"),
        ("squeue", "-h", "-o", "%T %S %r", "-j"), ("scontrol", "show", "job"), ("scancel",),
        _slurm_state, "Submitted batch job 0", SLURM_STATES),
    "pbspro": Scheduler(
        "pbspro", "#PBS", "driver.pbs.j2", ("qsub",), ("qstat", "-x", "-f", "-F", "json"),
        (), ("qdel",), _pbs_state, "0.pbs", PBS_WORDS),
    "local": Scheduler(
        "local", None, None, (), (), (), (), lambda queue, show: "RUNNING", "PID:0",
        LOCAL_WORDS),
}
