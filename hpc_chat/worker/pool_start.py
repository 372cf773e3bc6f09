"""The node engines a worker pool will need, loaded while the pool starts.

Before this, a pilot job's first answer waited for the worker pool to start and register, for
the first task to reach a worker and import its code, and only then for that worker to start
the node engine and load the model: about 1 s for the embedded model on a 2-core node, far
longer for a large GGUF read from a parallel filesystem. The driver knows which models its
agents run, so the pool's launch line (:func:`hpc_chat.sites.build.start_engines_with_pool`)
runs this module in the background and then ``exec``\\ s Parsl's ``process_worker_pool.py`` in
the same shell: this process's parent *becomes* the pool's manager, with the same pid. So the
engines are started exactly as a worker starts them (:func:`engine_client.connect`, under the
same start lock, at the same socket path, bound to the same manager), a worker that asks
meanwhile waits for that load instead of starting its own, and each engine ends with the
manager like any node engine.

Nothing depends on it: a model that cannot be found or loaded here is left to the first worker
that needs it, which starts the engine itself and says why in the task's error. What went
wrong here goes to the engine's own log (``engine-*.log`` beside its socket) or, before an
engine exists, to this process's standard error, which the launch line sends to /dev/null.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from hpc_chat.llm.models import ModelSpec
from hpc_chat.protocol.engine import PoolStart
from hpc_chat.worker import engine_client
from hpc_chat.worker.chat import model_spec

log = logging.getLogger("hpc_chat.pool_start")


def specs(plan: PoolStart) -> list[ModelSpec]:
    """The distinct model specs of the plan's agents, in the agents' order, resolved on this
    node as a worker resolves them (the driver leaves out agents whose model it calls)."""
    found: list[ModelSpec] = []
    for agent in plan.agents:
        spec = model_spec(agent.model_dump(), plan.model)
        if spec not in found:
            found.append(spec)
    return found


def start_engines(plan: PoolStart, manager: int) -> int:
    """Start (and wait for) each engine the plan names under ``manager``; how many are up."""
    if plan.model.engine != "node":
        return 0  # each worker decodes its own requests
    up, engine = 0, engine_client.settings(plan.model)
    try:
        wanted = specs(plan)
    except Exception as exc:  # e.g. a model file this node cannot see: the worker will say so
        log.warning("no node engine started: %s", exc)
        return 0
    for spec in wanted:
        if os.getppid() != manager:  # the pool did not start, or has already ended
            break
        try:
            engine_client.connect(spec, engine, manager=manager).close()
            up += 1
        except Exception as exc:  # left to the worker, which retries and reports it
            log.warning("the node engine for %s did not start: %s", spec.path, exc)
    return up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpc_chat.worker.pool_start")
    parser.add_argument("plan", help="a PoolStart message, URL-safe base64 of its JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pool-start: %(message)s")
    try:
        plan = PoolStart.from_arg(args.plan)
    except ValueError as exc:
        log.error("not a pool start plan: %s", exc)
        return 2
    start_engines(plan, os.getppid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
