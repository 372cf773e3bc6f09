"""What a Parsl run leaves on disk and what it must clean up: its ledger, watchdog and run dir.

Before Parsl starts, the leftovers of dead drivers on this host are cancelled, the run
directory is checked and old runs are pruned, a ledger of this driver is opened and its watchdog
started (:mod:`hpc_chat.sites.ledger`, :mod:`hpc_chat.sites.watchdog`). The interchange records
itself as it starts (:mod:`hpc_chat.sites.interchange_guard`), and every block the provider
submits is recorded the moment it has a job id. The same holds for the Python API: it is the
executor that does this, not the command line. ``close`` (after Parsl's shutdown)
removes the ledger and stops the watchdog.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from pathlib import Path

from hpc_chat.errors import ConfigError, ExecutorError
from hpc_chat.sites.ledger import LedgerEntry, clean_dead, live_run_dirs, process_start

log = logging.getLogger(__name__)

KEEP_RUNS = 20  # runinfo/NNN directories kept; older ones are removed when a run starts

PROVIDER_SCHEDULERS = {"SlurmProvider": "slurm", "PBSProProvider": "pbspro"}


def prepare_run_dir(run_dir: str) -> None:
    """Refuse a run directory Parsl cannot use, and keep only the last ``KEEP_RUNS`` runs.

    Parsl puts the run directory into the worker pool's command line unquoted, so a path with
    a space starts no worker at all (the run would wait forever): it is refused here instead.
    The run directory of a driver that may still run (per the ledger) is never removed.
    """
    if re.search(r"\s", run_dir):
        raise ConfigError(f"the run directory {run_dir!r} contains a space or another blank: "
                          f"Parsl's workers cannot start there. Set HPC_CHAT_HOME to a path "
                          f"without blanks")
    root = Path(run_dir)
    if not root.is_dir():
        return
    runs = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))
    live = {str(Path(d).resolve()) for d in live_run_dirs()}
    for old in runs[:max(0, len(runs) - KEEP_RUNS + 1)]:
        if str(old.resolve()) not in live:
            shutil.rmtree(old, ignore_errors=True)


def scheduler_of(provider) -> str:
    for cls in type(provider).__mro__:
        if cls.__name__ in PROVIDER_SCHEDULERS:
            return PROVIDER_SCHEDULERS[cls.__name__]
    return "local"


class RunLedger:
    """This driver's ledger entry and watchdog, and the recording of submitted blocks."""

    def __init__(self, entry: LedgerEntry | None):
        self.entry = entry
        self._lock = threading.Lock()
        self._watchdog = None

    def record(self, job_id) -> None:
        if self.entry is None or job_id is None:
            return
        with self._lock:
            try:
                self.entry.add_job(str(job_id))
            except OSError as exc:
                log.warning("could not record pilot job %s in %s: %s", job_id,
                            self.entry.path, exc)

    def started(self, htex) -> None:
        """After Parsl started: note the interchange's PID and this run's directory."""
        proc = getattr(htex, "interchange_proc", None)
        if self.entry is None:
            return
        with self._lock:
            if proc is not None:
                self.entry.interchange_pid = proc.pid
                self.entry.interchange_start = process_start(proc.pid)
            run_dir = getattr(htex, "run_dir", None)
            self.entry.run_dir = str(Path(run_dir).resolve()) if run_dir else None
            try:
                self.entry.save()
            except OSError as exc:
                log.warning("could not update the run record %s: %s", self.entry.path, exc)

    def close(self) -> None:
        if self.entry is None:
            return
        self.entry.remove()
        if self._watchdog is not None:
            self._watchdog.terminate()
            try:
                self._watchdog.wait(5)
            except Exception:  # noqa: BLE001 - it is killed below either way
                self._watchdog.kill()
        self.entry = None


def open_ledger(config) -> RunLedger:
    """Clean up after dead drivers, prune old runs, then record this one (see the module
    docstring)."""
    from hpc_chat.sites import interchange_guard, watchdog

    htex = next((ex for ex in config.executors if hasattr(ex, "provider")), None)
    try:
        prepare_run_dir(config.run_dir)
        if htex is None or htex.provider is None:
            return RunLedger(None)
        for line in clean_dead():
            log.warning("leftovers of a driver that died: %s", line)
        entry = LedgerEntry.for_this_driver(scheduler_of(htex.provider),
                                            htex.label.removesuffix("_htex"))
        entry.save()
    except OSError as exc:
        raise ExecutorError(f"cannot write the run record under {exc.filename or 'the home'}: "
                            f"{exc.strerror or exc}; check HPC_CHAT_HOME") from exc
    ledger = RunLedger(entry)
    # The provider's own submit, kept so a second start of the same config wraps it once.
    submit = getattr(htex.provider, "_unrecorded_submit", None) or htex.provider.submit
    htex.provider._unrecorded_submit = submit

    def recorded_submit(*args, **kwargs):
        job_id = submit(*args, **kwargs)
        ledger.record(job_id)
        return job_id

    htex.provider.submit = recorded_submit
    # Parsl's own launch command, kept so a second start records to this run's entry.
    launch = getattr(htex, "_unguarded_launch_cmd", None) or list(htex.interchange_launch_cmd)
    htex._unguarded_launch_cmd = launch
    htex.interchange_launch_cmd = interchange_guard.guarded(launch, entry.interchange_record,
                                                            entry.pid)
    ledger._watchdog = watchdog.start(entry.path)
    return ledger
