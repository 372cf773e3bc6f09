"""The node engines a worker pool will need, loaded while the pool starts.

Before this, a pilot job's first answer waited for the worker pool to start and register, for
the first task to reach a worker and import its code, and only then for that worker to start
the node engine and load the model: about 1 s for the embedded model on a 2-core node, far
longer for a large GGUF read from a parallel filesystem. The driver knows which models its
agents run, so the pool's launch line (:func:`hpc_chat.sites.build.start_engines_with_pool`)
is ``hpc-chat-pool-start PLAN ... & exec process_worker_pool.py ...``: this process's parent
is the shell that then execs the pool and keeps its pid, the pool's manager. It waits
until its parent runs Parsl's ``process_worker_pool`` (and gives up when it does not: a failed
``exec`` leaves this process to init or a subreaper, which never runs it), then starts each
engine exactly as a worker does (:func:`engine_client.connect`, under the same start lock, at
the same socket path, bound to the same manager). A worker that asks meanwhile waits for that
load instead of starting its own, and each engine ends with the manager like any node engine.
The engines start one after another: a process starts one engine at a time (its start lock).

This process ends once its engines listen, and as a child of the manager that never waits for
it, it stays in the process table as ``<defunct>`` (no memory, no CPU) until the pool ends: one
per pool, the price of learning the manager's pid without a shell variable (a launcher's
unquoted here-document would expand ``$$`` or ``$PPID`` in the job script instead).

Nothing depends on it: a model that cannot be found or loaded here is left to the first worker
that needs it, which starts the engine itself and says why in the task's error. What happened
here is logged to ``pool_start-HOST-MANAGER.log`` in the pool's log directory (``--logdir``,
Parsl's worker log directory), and an engine's own failure to its ``engine-*.log``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path

from hpc_chat.llm.models import ModelSpec
from hpc_chat.protocol.engine import PoolStart
from hpc_chat.worker import engine_client
from hpc_chat.worker.chat import model_spec
from hpc_chat.worker.node_engine import process_start

log = logging.getLogger("hpc_chat.pool_start")
POOL = b"process_worker_pool"  # what the manager runs once the shell has exec'd it
POOL_WAIT_S = 30.0  # the shell execs the pool right after starting this: by then it has
POLL_S = 0.05


def specs(plan: PoolStart) -> list[ModelSpec]:
    """The distinct model specs of the plan's agents, in the agents' order, resolved on this
    node as a worker resolves them (the driver leaves out agents whose model it calls). An
    agent whose model does not resolve here is logged and left to its worker."""
    found: list[ModelSpec] = []
    for agent in plan.agents:
        try:
            spec = model_spec(agent.model_dump(), plan.model)
        except Exception as exc:  # e.g. a model file this node cannot see
            log.warning("no node engine for model %s: %s", agent.model, exc)
            continue
        if spec not in found:
            found.append(spec)
    return found


def wait_for_pool(manager: int, timeout: float = POOL_WAIT_S) -> int | None:
    """The manager's start time once ``manager`` runs the worker pool; None when it ends, when
    this process is no longer its child (a subreaper took it: the shell's ``exec`` failed), or
    when it has not become the pool within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = process_start(manager)
        if started is None or os.getppid() != manager:
            return None
        try:
            if POOL in Path(f"/proc/{manager}/cmdline").read_bytes():
                return started
        except OSError:
            return None
        time.sleep(POLL_S)
    return None


def start_engines(plan: PoolStart, manager: int, started: int) -> int:
    """Start (and wait for) each engine the plan names under ``manager`` (which began at
    ``started``: a pid reused by another process is not it); how many are up."""
    if plan.model.engine != "node":
        return 0  # each worker decodes its own requests
    up, engine = 0, engine_client.settings(plan.model)
    for spec in specs(plan):
        if process_start(manager) != started:  # the pool has ended
            break
        try:
            engine_client.connect(spec, engine, manager=manager).close()
            up += 1
            log.info("node engine for %s ready", spec.path)
        except Exception as exc:  # left to the worker, which retries and reports it
            log.warning("the node engine for %s did not start: %s", spec.path, exc)
    return up


def _log_to(logdir: str | None, manager: int) -> None:
    """Log to a file of this user's in the pool's log directory (never through a link),
    or to standard error when there is none."""
    handler: logging.Handler = logging.StreamHandler()
    if logdir:
        try:
            os.makedirs(logdir, mode=0o700, exist_ok=True)
            name = f"pool_start-{socket.gethostname().split('.')[0]}-{manager}.log"
            fd = os.open(os.path.join(logdir, name),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
        except OSError:
            pass
    handler.setFormatter(logging.Formatter("%(asctime)s pool-start %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    manager = os.getppid()  # the shell that becomes the pool (checked: wait_for_pool)
    parser = argparse.ArgumentParser(prog="hpc-chat-pool-start")
    parser.add_argument("plan", help="a PoolStart message, URL-safe base64 of its JSON")
    parser.add_argument("--logdir", help="the worker pool's log directory")
    args = parser.parse_args(argv)
    _log_to(args.logdir, manager)
    try:
        plan = PoolStart.from_arg(args.plan)
    except ValueError as exc:
        log.error("not a pool start plan: %s", exc)
        return 2
    started = wait_for_pool(manager) if manager > 1 else None
    if started is None:
        log.error("the parent (pid %d) did not become a worker pool: no engine started",
                  manager)
        return 1
    start_engines(plan, manager, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
