"""Scheduler commands that hang, fail or print nonsense must not stall or mislead Parsl.

Parsl's cluster providers run ``sbatch``/``squeue``/``qsub``/``qstat`` through one method,
``execute_wait``. Left alone:

* a command that hangs raises ``TimeoutExpired`` out of the provider (the status poller or the
  block launch fails with a traceback instead of a message);
* an ``squeue`` answer it cannot parse crashes the status update;
* a job missing from one ``squeue``/``qstat`` answer (a scheduler hiccup) is taken as finished,
  and the scaling strategy submits a replacement: a spurious extra pilot job.

The guard wraps that one method. A hang becomes a failed command whose message says so (Parsl
then keeps the last known job states, or reports the failed submission); an unusable status
answer is refused the same way; and a job is only believed gone when a second query, a moment
later, agrees.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time

from parsl.providers import PBSProProvider, SlurmProvider

log = logging.getLogger(__name__)

TIMEOUT_RC = 124
_SLURM_LINE = re.compile(r"^\s*(\S+)\s+(\S+)")


class GuardedCommands:
    """Mixin for a Parsl cluster provider; see the module docstring."""

    recheck_delay_s = 2.0
    status_commands: tuple[str, ...] = ()
    polling_interval_s: int | None = None  # the profile's status_polling_interval

    @property
    def status_polling_interval(self):
        return self.polling_interval_s or super().status_polling_interval

    def execute_wait(self, cmd, timeout=None):
        result = self._run_guarded(cmd, timeout)
        if result[0] != 0 or not cmd.startswith(self.status_commands):
            return result
        problem = self.status_problem(result[1])
        if problem:
            return self._refuse(cmd, problem, result)
        missing = self.missing_jobs(result[1])
        if missing:
            # Believe "gone" only if a second look agrees: one empty or partial answer from a
            # busy scheduler must not end a pilot job in Parsl's eyes.
            time.sleep(self.recheck_delay_s)
            again = self._run_guarded(cmd, timeout)
            if again[0] != 0:
                return again
            problem = self.status_problem(again[1])
            if problem:
                return self._refuse(cmd, problem, again)
            log.info("jobs %s are no longer listed by the scheduler (checked twice)",
                     ", ".join(sorted(self.missing_jobs(again[1]))))
            return again
        return result

    def _run_guarded(self, cmd, timeout):
        try:
            return super().execute_wait(cmd, timeout)
        except subprocess.TimeoutExpired as exc:
            message = (f"'{cmd.split()[0]}' did not answer within {exc.timeout} s; the "
                       f"scheduler may be overloaded (raise cmd_timeout in the site profile "
                       f"if this persists)")
            log.warning(message)
            return TIMEOUT_RC, "", message

    def _refuse(self, cmd, problem, result):
        message = f"unusable answer from '{cmd.split()[0]}': {problem}; keeping the last " \
                  f"known job states"
        log.warning("%s (stdout: %r)", message, result[1][:500])
        return 1, result[1], message

    def active_job_ids(self) -> set[str]:
        return {jid for jid, job in self.resources.items() if not job["status"].terminal}

    def status_problem(self, stdout: str) -> str | None:
        raise NotImplementedError

    def missing_jobs(self, stdout: str) -> set[str]:
        raise NotImplementedError


class GuardedSlurmProvider(GuardedCommands, SlurmProvider):
    """Parsl's SlurmProvider with guarded ``sbatch``/``squeue``/``sacct``/``scancel``."""

    status_commands = ("squeue", "sacct")

    def _listed(self, stdout: str) -> dict[str, str]:
        return {m.group(1): m.group(2) for line in stdout.splitlines()
                if (m := _SLURM_LINE.match(line))}

    def status_problem(self, stdout: str) -> str | None:
        table = getattr(self, "_translate_table", {})
        for line in stdout.splitlines():
            if not line.strip():
                continue
            m = _SLURM_LINE.match(line)
            if not m:
                return f"cannot read the line {line.strip()!r}"
            job_id, state = m.groups()
            if job_id not in self.resources:
                return f"job {job_id!r} was not asked about"
            if table and state not in table:
                return f"unknown job state {state!r}"
        return None

    def missing_jobs(self, stdout: str) -> set[str]:
        return self.active_job_ids() - set(self._listed(stdout))


class GuardedPBSProProvider(GuardedCommands, PBSProProvider):
    """Parsl's PBSProProvider with guarded ``qsub``/``qstat``/``qdel``."""

    status_commands = ("qstat",)

    def _jobs(self, stdout: str):
        data = json.loads(stdout)
        jobs = data.get("Jobs", {}) if isinstance(data, dict) else None
        if not isinstance(jobs, dict):
            raise ValueError("no \"Jobs\" object")
        return jobs

    def status_problem(self, stdout: str) -> str | None:
        try:
            self._jobs(stdout)
        except (ValueError, AttributeError) as exc:
            return f"not qstat's JSON ({exc})"
        return None

    def missing_jobs(self, stdout: str) -> set[str]:
        listed = self._jobs(stdout)
        return {jid for jid in self.active_job_ids()
                if not any(jid.startswith(short) or short.startswith(jid) for short in listed)}


GUARDED = {"SlurmProvider": GuardedSlurmProvider, "PBSProProvider": GuardedPBSProProvider}
