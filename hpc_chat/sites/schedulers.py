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


# The states after which a job runs no more, as ``job_state`` gives them (Slurm's words, PBS's
# codes spelled out, and our own ``FINISHED (no longer known to ...)``); any other state, an
# unknown one included, may still run or start.
ENDED_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED", "FINISHED")


def job_ended(state: str) -> bool:
    return state.startswith(ENDED_STATES)


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

    def job_id(self, submit_stdout: str) -> str:
        """The job id in the submit command's answer (``123;cluster`` or ``123.server``)."""
        return submit_stdout.strip().split(";")[0].strip()


SCHEDULERS = {
    "slurm": Scheduler(
        "slurm", "#SBATCH", "driver.slurm.j2", ("sbatch", "--parsable"),
        ("squeue", "-h", "-o", "%T %S %r", "-j"), ("scontrol", "show", "job"), ("scancel",),
        _slurm_state, "Submitted batch job 0"),
    "pbspro": Scheduler(
        "pbspro", "#PBS", "driver.pbs.j2", ("qsub",), ("qstat", "-x", "-f", "-F", "json"),
        (), ("qdel",), _pbs_state, "0.pbs"),
    "local": Scheduler(
        "local", None, None, (), (), (), (), lambda queue, show: "RUNNING", "PID:0"),
}
