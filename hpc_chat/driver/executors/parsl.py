"""``ParslExecutor``: submit Python functions to Parsl and await them from asyncio.

Each executor owns its own Parsl ``DataFlowKernel`` (never the global one that ``parsl.load``
manages), so several workflows in one process do not fight over Parsl, and ``shutdown()`` stops
exactly what ``initialize()`` started: the interchange, the worker pools and the blocks.

It is never silently replaced by local threads (:mod:`hpc_chat.driver.executors.local`): when Parsl
fails to start, the user gets an :class:`ExecutorError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from hpc_chat.driver.executors.base import ExecutorConfig
from hpc_chat.driver.executors.packing import awaitable, packed
from hpc_chat.driver.executors.run_ledger import RunLedger, open_ledger, scheduler_of
from hpc_chat.errors import ExecutorError
from hpc_chat.worker.tasks import chat_task, packed_call

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 20.0


class ParslExecutor:
    """Parsl behind an asyncio interface (a
    :class:`~hpc_chat.driver.executors.base.ChatExecutor`)."""

    chat_function = staticmethod(chat_task)
    supports_batching = True

    def __init__(self, config: ExecutorConfig | None = None, *, parsl_config: Any = None):
        self.config = config or ExecutorConfig()
        self.parsl_config = parsl_config or self.config.parsl_config
        self.dfk = None
        self.ledger: RunLedger | None = None
        self._apps: dict[Callable, Any] = {}
        self.lost = LostManagers()
        self._starting: concurrent.futures.Future | None = None  # Parsl's start, until it ends

    @property
    def started(self) -> bool:
        return self.dfk is not None

    async def initialize(self) -> None:
        """Start the DataFlowKernel and its executors (workers start in the background)."""
        if self.dfk is not None:
            return
        from hpc_chat.sites.build import ensure_driver_path, get_local_config

        ensure_driver_path()
        config = self.parsl_config or get_local_config(self.config.max_workers)
        refuse_unencrypted(config)
        self.ledger = await asyncio.to_thread(open_ledger, config)
        self.lost.watch(config)
        self._starting = starting = start_parsl(config)
        try:
            dfk = await asyncio.wrap_future(starting)
        except Exception as exc:  # Parsl raises many kinds; the user needs the reason
            self._starting = None
            self.ledger.close()
            raise ExecutorError(f"Parsl failed to start: {type(exc).__name__}: {exc}") from exc
        if self._starting is not starting:  # shut down while starting: shutdown() stopped it
            return
        self._starting = None
        self.dfk = dfk
        self.ledger.started(self.htex())
        self.parsl_config = config

    def submit(self, fn: Callable, *args, tag: str | None = None,
               **kwargs) -> asyncio.Future:
        """Run ``fn(*args, **kwargs)`` on a worker; the result is awaitable without blocking.
        (``tag`` names the task for executors that can reattach to tasks; unused here.)"""
        if self.dfk is None:
            raise ExecutorError("the executor is not initialized; call 'await initialize()'")
        call = packed(fn, args)
        if call is not None:
            return awaitable(self._app(packed_call)(call, **kwargs), unpack=True)
        return awaitable(self._app(fn)(*args, **kwargs))

    def _app(self, fn: Callable):
        from parsl.app.python import PythonApp

        app = self._apps.get(fn)
        if app is None:
            app = self._apps[fn] = PythonApp(fn, data_flow_kernel=self.dfk)
        return app

    @property
    def scheduler(self) -> str:
        """Who runs the blocks: ``slurm``/``pbspro`` for pilot jobs, ``local`` for processes
        (the local site, and the driver job's own allocation, whose blocks are local PIDs)."""
        ex = self.htex()
        return scheduler_of(ex.provider) if ex is not None and ex.provider else "local"

    def htex(self):
        """The first HighThroughputExecutor, if any (for worker and block statistics)."""
        return None if self.dfk is None else _htex_of(self.dfk)

    async def wait_for_workers(self, minimum: int = 1, timeout: float = 120.0) -> int:
        """Wait until ``minimum`` workers are connected (or ``timeout``); returns how many are.

        Workers start in the background after ``initialize``: a local pool in a few seconds,
        pilot jobs whenever the scheduler runs them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            workers = (await asyncio.to_thread(self.stats))["active_workers"]
            if workers >= minimum or loop.time() >= deadline:
                return workers
            await asyncio.sleep(0.2)

    def stats(self) -> dict[str, Any]:
        """Workers, blocks and task counts as Parsl sees them now."""
        from parsl.dataflow.states import States

        if self.dfk is None:
            return {"active_workers": 0, "pending_tasks": 0, "completed_tasks": 0,
                    "failed_tasks": 0, "retried_tasks": 0, "blocks": 0, "connected_blocks": 0}
        counts = dict(self.dfk.task_state_counts)
        pending = sum(counts.get(s, 0) for s in (States.pending, States.launched,
                                                 States.running, States.fail_retryable))
        out = {
            "pending_tasks": pending,
            "completed_tasks": counts.get(States.exec_done, 0),
            "failed_tasks": counts.get(States.failed, 0) + counts.get(States.dep_fail, 0),
            "retried_tasks": self._retries(),
            "submitted_tasks": self.dfk.task_count,
            "active_workers": 0, "managers": 0, "blocks": 0, "connected_blocks": 0,
            "outstanding": 0,
        }
        ex = self.htex()
        if ex is not None:
            try:
                managers = ex.connected_managers()
                out["active_workers"] = sum(m["worker_count"] for m in managers if m["active"])
                out["managers"] = len(managers)
                out["by_block"] = by_block(managers)
                out["connected_blocks"] = len({m["block_id"] for m in managers})
                outstanding = ex.outstanding  # a method in recent Parsl, a property before
                out["outstanding"] = outstanding() if callable(outstanding) else outstanding
            except Exception as exc:  # the interchange may be gone during shutdown
                log.debug("could not query the interchange: %s", exc)
            out["blocks"] = len(ex.blocks_to_job_id)
            out["job_ids"] = list(ex.blocks_to_job_id.values())
            out["block_jobs"] = {str(b): str(j) for b, j in ex.blocks_to_job_id.items()}
            out["block_failures"] = block_failures(ex)
        out["lost_hosts"] = self.lost.hosts()
        return out

    def block_output(self, job_id: str) -> list[str]:
        """The stdout/stderr files a provider gave a pilot job (what its workers printed)."""
        ex = self.htex()
        info = getattr(getattr(ex, "provider", None), "resources", {}).get(job_id, {})
        if info.get("script_path") and "job_stderr_path" not in info:  # a LocalProvider block
            return [f"{info['script_path']}.err", f"{info['script_path']}.out"]
        return [info[k] for k in ("job_stderr_path", "job_stdout_path") if info.get(k)]

    def _retries(self) -> int:
        """Retries so far: counted by our retry handler (Parsl forgets finished tasks), or
        the failures of tasks Parsl still holds when another handler is configured."""
        handler = self.dfk.config.retry_handler
        if hasattr(handler, "hopeless"):
            return handler.failures - handler.hopeless
        return sum(rec.get("fail_count", 0) for rec in self.dfk.tasks.values())

    async def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop the kernel, the interchange and every worker this executor started.

        Parsl's ``cleanup`` asks the interchange which managers to scale in and waits without a
        time limit, so it hangs when the interchange is already gone. It runs in a daemon thread
        here; past ``timeout`` the interchange is killed and the blocks are cancelled through
        the provider directly, so shutdown always ends and leaves nothing behind.
        """
        dfk, self.dfk = self.dfk, None
        starting, self._starting = self._starting, None
        self._apps.clear()
        if dfk is None and starting is not None:
            # Interrupted (Ctrl-C) while Parsl was starting: its start ends in seconds; then
            # everything it started is stopped like any other run's, never left behind.
            try:
                dfk = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(starting)),
                                             timeout)
            except asyncio.TimeoutError:  # a scheduler command that hangs, say
                log.warning("Parsl did not finish starting in %.0f s; what it started is "
                            "cancelled by this run's watchdog when this process ends", timeout)
                return  # the ledger stays: the watchdog stops what it lists
            except Exception:  # it failed to start: nothing of it runs
                self.ledger.close()
                return
            self.ledger.started(_htex_of(dfk))
        if dfk is None:
            return
        try:
            await self._stop(dfk, timeout)
        finally:
            self.ledger.close()

    async def _stop(self, dfk, timeout: float) -> None:
        done = asyncio.get_running_loop().create_future()

        def cleanup() -> None:
            try:
                dfk.cleanup()
            except Exception as exc:  # report, then make sure below
                log.warning("Parsl cleanup failed: %s", exc)
            finally:
                done.get_loop().call_soon_threadsafe(
                    lambda: done.done() or done.set_result(None))

        threading.Thread(target=cleanup, name="hpc_chat-parsl-cleanup", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except asyncio.TimeoutError:
            log.warning("Parsl cleanup did not finish in %.0f s; stopping its processes "
                        "directly", timeout)
            await asyncio.to_thread(_force_stop, dfk)


class LostManagers:
    """Which worker nodes the interchange lost (missed heartbeats: the node died, its job was
    killed, the network went away), seen through the tasks that were on them.

    Parsl fails each task of a lost manager with ``ManagerLost`` and asks the retry handler
    what to do; this wraps the config's handler (or Parsl's default cost of 1), notes the
    host, logs one warning per lost manager, and passes the decision on unchanged. A manager
    lost while idle costs no task and is not reported here (Parsl's interchange.log has it).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._tasks: dict[str, int] = {}     # host -> tasks that were on its lost managers
        self._managers: set[str] = set()

    def watch(self, config) -> None:
        """Wrap ``config.retry_handler`` (once: a config may be started again)."""
        handler = config.retry_handler
        if isinstance(handler, _RecordingHandler):
            handler.lost = self
        else:
            config.retry_handler = _RecordingHandler(handler, self)

    def note(self, exc: BaseException) -> None:
        from parsl.executors.high_throughput.errors import ManagerLost

        inner = getattr(exc, "e_value", None) or exc
        if not isinstance(inner, ManagerLost):
            return
        manager = inner.manager_id.decode(errors="replace") if isinstance(
            inner.manager_id, bytes) else str(inner.manager_id)
        with self._lock:
            self._tasks[inner.hostname] = self._tasks.get(inner.hostname, 0) + 1
            first = manager not in self._managers
            self._managers.add(manager)
        if first:
            log.warning("lost the workers on node %s (Parsl manager %s missed its heartbeats): "
                        "the requests it was running are retried on the remaining workers",
                        inner.hostname, manager)

    def hosts(self) -> dict[str, int]:
        """``{host: tasks lost with it}`` so far."""
        with self._lock:
            return dict(self._tasks)


class _RecordingHandler:
    """A Parsl ``retry_handler`` that tells :class:`LostManagers` about each failure first.
    Attributes (``failures``, ``hopeless``) are the wrapped handler's."""

    def __init__(self, inner, lost: LostManagers):
        self.inner = inner
        self.lost = lost

    def __call__(self, exc: BaseException, task_record: Any) -> float:
        try:
            self.lost.note(exc)
        except Exception as error:  # a report must never change what Parsl decides
            log.debug("could not record a lost manager: %s", error)
        return self.inner(exc, task_record) if self.inner is not None else 1

    def __getattr__(self, name: str):
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def start_parsl(config) -> concurrent.futures.Future:
    """Start Parsl's kernel in a thread of its own, with SIGINT blocked in that thread.

    Ctrl-C at a terminal signals the whole foreground process group. The interchange is a
    child of the driver in that group; if it died there, Parsl could not shut down cleanly.
    A blocked signal stays blocked in every process and thread started from this thread (the
    interchange, through its launch command's exec, and Parsl's own threads), so none of them
    is stopped by Ctrl-C. The driver's main thread keeps SIGINT: a Ctrl-C while Parsl starts
    raises KeyboardInterrupt there at once, and :meth:`ParslExecutor.shutdown` waits for the
    start to end and stops what it started. (Worker pools run in process groups of their
    own: Parsl's providers start them with ``setpgrp``.)
    """
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():  # cancelled before it began
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            future.set_result(_start_dfk(config))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the start
            future.set_exception(exc)

    threading.Thread(target=run, name="hpc_chat-parsl-start", daemon=True).start()
    return future


def _htex_of(dfk):
    """A kernel's first HighThroughputExecutor, if any."""
    for ex in dfk.executors.values():
        if hasattr(ex, "connected_managers"):
            return ex
    return None


def _force_stop(dfk) -> None:
    """Kill the interchange and cancel every block when Parsl's own cleanup hangs."""
    for ex in list(dfk.executors.values()):
        proc = getattr(ex, "interchange_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
        provider = getattr(ex, "provider", None)
        job_ids = list(getattr(ex, "blocks_to_job_id", {}).values())
        if provider is not None and job_ids:
            try:
                provider.cancel(job_ids)
            except Exception as exc:
                log.warning("could not cancel blocks %s: %s", job_ids, exc)


def block_failures(ex) -> list[str]:
    """Why blocks failed to start (e.g. the scheduler refused the submission), as Parsl
    recorded it; read from its last known states, so the scheduler is not asked again."""
    from parsl.jobs.states import JobState

    found = [f"block {block}: {status.message}" for block, status in
             list(ex.status_facade.items())
             if status.state == JobState.FAILED and status.message]
    if ex.bad_state_is_set and ex.executor_exception is not None:
        found.append(str(ex.executor_exception))
    return found


def refuse_unencrypted(config) -> None:
    """Refuse a HighThroughputExecutor without CurveZMQ: its worker port is open to every
    user who can reach the host, and whoever connects can return a pickle the driver loads."""
    import parsl

    for ex in config.executors:
        if hasattr(ex, "interchange_launch_cmd") and not getattr(ex, "encrypted", False):
            raise ExecutorError(
                f"the Parsl executor {ex.label!r} is not encrypted (Parsl {parsl.__version__}): "
                f"anyone who can reach its worker port could send this driver answers and "
                f"code. Create it with encrypted=True (CurveZMQ; site profiles always do), "
                f"with a Parsl that has it")


def _start_dfk(config):
    from parsl.dataflow.dflow import DataFlowKernel

    return DataFlowKernel(config)


def by_block(managers: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per block: its connected managers (one per node), their workers and running tasks."""
    out: dict[str, dict[str, int]] = {}
    for m in managers:
        block = out.setdefault(str(m.get("block_id")), {"managers": 0, "workers": 0,
                                                         "tasks": 0})
        block["managers"] += 1
        block["workers"] += m.get("worker_count") or 0
        block["tasks"] += m.get("tasks") or 0
    return out
