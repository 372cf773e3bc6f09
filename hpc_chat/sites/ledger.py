"""The run ledger: what each running driver started, so nothing outlives a driver that died.

A driver that starts Parsl writes ``$HPC_CHAT_HOME/runs/HOST-PID-RUN.json`` (``RUN``: random, one
file per Parsl start of the process) and keeps it current:
its own process start time (a PID alone can be reused), the batch job it runs in (if any), the
interchange's PID, and every pilot job (block) as soon as it is submitted. Its normal shutdown
removes the file. A file whose driver is gone describes leftovers: the driver's watchdog
(:mod:`hpc_chat.sites.watchdog`) cancels them the moment the driver dies, and ``hpc-chat
cleanup``, the next run on this host and ``hpc-chat cancel`` cancel whatever is still listed.

A driver is dead when, on its own host, its PID no longer has the recorded start time, or,
wherever it ran, when the batch job it ran in has ended (so records written on a compute node
by a driver job that was ``scancel``-ed are cleaned from the login node too).

Cancelling asks the scheduler (``scancel``/``qdel`` from the scheduler table) for pilot jobs,
and kills process groups for the ``local`` site, whose blocks are processes; a PID is only
killed when its process start time is the one recorded. A record is removed only when every
job it lists is cancelled or known to have ended; otherwise it stays for the next cleanup.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hpc_chat.sites.schedulers import SCHEDULERS
from hpc_chat.util.paths import home_subdir

log = logging.getLogger(__name__)

# Its command line: Parsl's launcher, its setproctitle title, or the guard before the exec.
INTERCHANGE_MARKERS = (b"interchange", b"parsl: HTEX")


def ledger_dir() -> Path:
    return home_subdir("runs")


def process_start(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot (``/proc/PID/stat`` field 22),
    or None when there is no such process (or it is a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@dataclass
class LedgerEntry:
    """One driver's record (one file)."""

    host: str
    pid: int
    start: int | None
    scheduler: str
    site: str
    driver_job: str | None = None
    driver_scheduler: str | None = None  # the scheduler of driver_job: "slurm" or "pbspro"
    interchange_pid: int | None = None
    interchange_start: int | None = None
    run_dir: str | None = None  # Parsl's runinfo/NNN of this run (kept from pruning)
    # Pilot jobs: {"id": "123"} (and "start" for a local process group).
    jobs: list[dict] = field(default_factory=list)
    path: Path | None = None

    @classmethod
    def for_this_driver(cls, scheduler: str, site: str) -> "LedgerEntry":
        pid = os.getpid()
        driver_job, driver_scheduler = None, None
        if os.environ.get("SLURM_JOB_ID"):
            driver_job, driver_scheduler = os.environ["SLURM_JOB_ID"], "slurm"
        elif os.environ.get("PBS_JOBID"):
            driver_job, driver_scheduler = os.environ["PBS_JOBID"], "pbspro"
        entry = cls(host=socket.gethostname(), pid=pid, start=process_start(pid),
                    scheduler=scheduler, site=site, driver_job=driver_job,
                    driver_scheduler=driver_scheduler)
        # One file per run, not per process: a Python program may run two workflows at once,
        # and the first one's normal end must not remove the second one's record.
        entry.path = ledger_dir() / f"{entry.host}-{pid}-{secrets.token_hex(4)}.json"
        return entry

    @classmethod
    def read(cls, path: Path) -> "LedgerEntry":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in ("host", "pid", "start", "scheduler", "site") if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        known = {k: data[k] for k in ("host", "pid", "start", "scheduler", "site",
                                      "driver_job", "driver_scheduler", "interchange_pid",
                                      "interchange_start", "run_dir", "jobs") if k in data}
        entry = cls(**known)
        if not isinstance(entry.pid, int) or not isinstance(entry.jobs, list) or \
                entry.scheduler not in SCHEDULERS:
            raise ValueError("pid, jobs or scheduler of the wrong type")
        entry.path = path
        return entry

    def save(self) -> None:
        """Written whole to a temporary file and renamed, so a reader never sees half."""
        assert self.path is not None
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.interchange_record.unlink(missing_ok=True)

    @property
    def interchange_record(self) -> Path:
        """Where the interchange records itself as it starts, before the driver knows its
        PID (:mod:`hpc_chat.sites.interchange_guard`)."""
        assert self.path is not None
        return self.path.with_suffix(".interchange")

    def interchanges(self) -> set[tuple[int, int | None]]:
        """(pid, start) of this driver's interchange: as the driver recorded it once Parsl had
        started, and as the interchange recorded itself when it began."""
        found = {(self.interchange_pid, self.interchange_start)} if self.interchange_pid \
            else set()
        try:
            own = json.loads(self.interchange_record.read_text())
            found.add((int(own["pid"]), own.get("start")))
        except (OSError, ValueError, TypeError, KeyError, AssertionError):
            pass  # no interchange began, or Parsl launched it without the guard
        return found

    def add_job(self, job_id: str) -> None:
        job: dict = {"id": str(job_id)}
        if self.scheduler == "local" and str(job_id).isdigit():
            job["start"] = process_start(int(job_id))
        self.jobs.append(job)
        self.save()

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def driver_alive(self) -> bool | None:
        """False when the driver is known to be gone: on its own host, its PID no longer has
        the recorded start time; anywhere, the batch job it ran in has ended. True when it
        runs on this host; None when it cannot be told (another host, no driver job)."""
        if self.on_this_host():
            return self.start is not None and process_start(self.pid) == self.start
        if self.driver_job and self.driver_scheduler in SCHEDULERS:
            from hpc_chat.sites.submit import pilot_state

            if pilot_state(self.driver_scheduler, self.driver_job).ended:
                return False
        return None

    def cancel_leftovers(self) -> tuple[list[str], bool]:
        """Stop the interchange and cancel every recorded pilot job: what was done, in words,
        and whether everything is known to be stopped (else keep the record)."""
        done = []
        for pid, start in sorted(self.interchanges() if self.on_this_host() else ()):
            if process_start(pid) == start and \
                    any(m in _cmdline(pid) for m in INTERCHANGE_MARKERS):
                _kill(pid)
                done.append(f"stopped the interchange (pid {pid})")
        ids = [str(j.get("id")) for j in self.jobs if isinstance(j, dict) and j.get("id")]
        if not ids:
            return done, True
        if self.scheduler == "local":
            if not self.on_this_host():  # its processes can only be stopped on its host
                return done, False
            killed = [j["id"] for j in self.jobs if _kill_local_block(j)]
            if killed:
                done.append(f"stopped local worker pools {', '.join(killed)}")
            return done, True
        command = SCHEDULERS[self.scheduler].cancel_command
        try:
            proc = subprocess.run([*command, *ids], capture_output=True, text=True,
                                  timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            done.append(f"could not cancel pilot jobs {', '.join(ids)}: {exc}; "
                        f"the record is kept")
            return done, False
        if proc.returncode == 0:
            done.append(f"cancelled pilot jobs {', '.join(ids)} ({command[0]})")
            return done, True
        # A non-zero answer also comes for jobs that had ended already: ask about each.
        from hpc_chat.sites.submit import pilot_state

        alive = {i: s for i in ids if not (s := pilot_state(self.scheduler, i)).ended}
        if not alive:
            done.append(f"pilot jobs {', '.join(ids)} had ended")
            return done, True
        why = (proc.stderr or proc.stdout).strip().splitlines()
        done.append(f"could not cancel pilot jobs "
                    f"{', '.join(f'{i} ({s})' for i, s in alive.items())}: {command[0]} said "
                    f"{why[-1] if why else f'exit {proc.returncode}'}; the record is kept")
        return done, False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _kill_local_block(job: dict) -> bool:
    """A local block is a process group; killed only if its leader is the recorded process."""
    try:
        pid = int(job["id"])
    except (KeyError, TypeError, ValueError):
        return False
    if job.get("start") is None or process_start(pid) != job["start"]:
        return False
    try:
        group = os.getpgid(pid)  # read once: after SIGTERM the PID may be reused
        os.killpg(group, signal.SIGTERM)
        time.sleep(1)
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
    return True


def entries() -> list[LedgerEntry | tuple[Path, str]]:
    """Every ledger file: an entry, or (path, why it cannot be read)."""
    found: list[LedgerEntry | tuple[Path, str]] = []
    for path in sorted(ledger_dir().glob("*.json")):
        try:
            found.append(LedgerEntry.read(path))
        except (OSError, ValueError, TypeError) as exc:
            found.append((path, str(exc)))
    return found


def live_run_dirs() -> set[str]:
    """The run directories of drivers that may still be running (never pruned)."""
    return {entry.run_dir for entry in entries()
            if isinstance(entry, LedgerEntry) and entry.run_dir
            and entry.driver_alive() is not False}


def clean_dead(*, driver_job: str | None = None, dry_run: bool = False) -> list[str]:
    """Cancel the leftovers of every driver on this host that is no longer running (or, with
    ``driver_job``, of the drivers that ran in that batch job, wherever they ran); returns
    one line per driver. Unreadable ledger files are reported and left in place. With
    ``dry_run``, only say what is recorded."""
    report = []
    for entry in entries():
        if isinstance(entry, tuple):
            path, why = entry
            report.append(f"{path}: cannot read this run record ({why}); remove it by hand")
            continue
        if driver_job is not None:
            if entry.driver_job != driver_job:
                continue
        elif entry.driver_alive() is not False:
            continue
        if dry_run:
            jobs = ", ".join(str(j.get("id")) for j in entry.jobs if isinstance(j, dict))
            report.append(f"driver {entry.pid} on {entry.host} ({entry.site}) is gone; "
                          f"recorded: interchange pid {entry.interchange_pid}, "
                          f"{entry.scheduler} jobs {jobs or 'none'}")
            continue
        actions, stopped = entry.cancel_leftovers()
        if stopped:
            entry.remove()
        what = "; ".join(actions) or "nothing was left running"
        report.append(f"driver {entry.pid} on {entry.host} ({entry.site}): {what}")
    return report
