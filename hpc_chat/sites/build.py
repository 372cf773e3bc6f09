"""Site profile -> Parsl objects, with Parsl's own providers and launchers: the one place a
Parsl ``Config`` is built.

Parsl writes the pilot-job scripts; we only choose its classes and arguments. The profile's
``worker_init`` is kept as written; when ``executor.use_driver_python`` is on (the default), a
line that puts the driver's ``bin/`` on PATH goes before it, so workers run the same
installation as the driver (on a cluster, the venv lives on a shared filesystem).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from hpc_chat.protocol.context import SiteModel
from hpc_chat.protocol.engine import PoolStart
from hpc_chat.sites import schema
from hpc_chat.util.logs import quiet_routine_task_lines
from hpc_chat.util.paths import hpc_chat_home

PROVIDER_FIELDS_NOT_FOR_PARSL = {"type", "launcher", "status_polling_interval"}


def driver_bin_dir() -> str:
    """The directory of the Python running the driver (a venv's ``bin/``)."""
    return str(Path(sys.executable).parent)


def with_driver_path(worker_init: str = "") -> str:
    """Prefix ``worker_init`` so workers find ``process_worker_pool.py`` of this installation.

    On a cluster the venv sits on a shared filesystem, so the driver's ``bin/`` is valid on the
    compute nodes too. A site's own ``worker_init`` (modules, conda) is kept after it.
    """
    export = f'export PATH="{driver_bin_dir()}:$PATH"'
    return f"{export}\n{worker_init}".strip() if worker_init else export


def ensure_driver_path() -> None:
    """Put the driver's ``bin/`` on this process's PATH (Parsl launches ``interchange.py``)."""
    bindir = driver_bin_dir()
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if bindir not in parts:
        os.environ["PATH"] = os.pathsep.join([bindir, *parts])


def default_run_dir() -> str:
    return str(hpc_chat_home() / "runinfo")


def build_launcher(spec: schema.Launcher):
    import parsl.launchers as launchers

    cls = getattr(launchers, spec.type)
    return cls(**spec.model_dump(exclude={"type"}))


def build_provider(profile: schema.SiteProfile, *, allocation: bool = False):
    """The Parsl provider for a profile.

    ``allocation=True`` is the in-allocation mode of the driver job: the driver already runs
    inside a batch job, so workers are started on its nodes by the profile's launcher through a
    ``LocalProvider`` instead of submitting more jobs.
    """
    import parsl.providers as providers

    spec = profile.provider
    worker_init = spec.worker_init
    if profile.executor.use_driver_python:
        worker_init = with_driver_path(worker_init)
    launcher = build_launcher(spec.launcher)
    if allocation:
        return providers.LocalProvider(nodes_per_block=allocation_nodes(profile),
                                       launcher=launcher, init_blocks=1, min_blocks=1,
                                       max_blocks=1, worker_init=worker_init)
    kwargs = spec.model_dump(exclude=PROVIDER_FIELDS_NOT_FOR_PARSL)
    kwargs["worker_init"] = worker_init
    from hpc_chat.sites.guard import GUARDED

    cls = GUARDED.get(spec.type) or getattr(providers, spec.type)
    provider = cls(launcher=launcher, **kwargs)
    if getattr(spec, "status_polling_interval", None):
        provider.polling_interval_s = spec.status_polling_interval
    return provider


def allocation_nodes(profile: schema.SiteProfile) -> int:
    """Nodes of the current batch job (Slurm or PBS), or the profile's nodes_per_block."""
    if os.environ.get("SLURM_JOB_NUM_NODES"):
        return int(os.environ["SLURM_JOB_NUM_NODES"])
    nodefile = os.environ.get("PBS_NODEFILE")
    if nodefile and os.path.exists(nodefile):
        with open(nodefile) as fh:
            return max(1, len({line.strip() for line in fh if line.strip()}))
    return profile.provider.nodes_per_block


def drain_period(profile: schema.SiteProfile, allocation: bool = False) -> int | None:
    """When workers of a pilot job stop taking new tasks.

    A task running when the walltime kills its job is lost and must be redone, so by default
    workers drain ``walltime_margin`` seconds before the walltime (never earlier than half way)
    and Parsl starts a fresh block for what remains. In allocation mode the driver's own job
    ends everything, so there is nothing to drain.
    """
    ex = profile.executor
    if ex.drain_period or allocation:
        return None if allocation else ex.drain_period
    walltime = getattr(profile.provider, "walltime", None)
    if not walltime:
        return None
    total = schema.walltime_seconds(walltime)
    return max(total - ex.walltime_margin, total // 2)


def executor_kwargs(profile: schema.SiteProfile, allocation: bool = False) -> dict[str, Any]:
    """HighThroughputExecutor arguments from the profile's executor section."""
    ex = profile.executor
    kwargs: dict[str, Any] = {
        "cores_per_worker": ex.cores_per_worker,
        "mem_per_worker": ex.mem_per_worker,
        "available_accelerators": ex.available_accelerators,
        "cpu_affinity": ex.cpu_affinity,
        "heartbeat_period": ex.heartbeat_period,
        "heartbeat_threshold": ex.heartbeat_threshold,
        "drain_period": drain_period(profile, allocation),
        "prefetch_capacity": ex.prefetch_capacity,
    }
    if ex.max_workers_per_node:
        kwargs["max_workers_per_node"] = ex.max_workers_per_node
    return kwargs


def build_executor(profile: schema.SiteProfile, *, allocation: bool = False,
                   max_workers: int | None = None, heartbeat: tuple[int, int] | None = None,
                   most_workers: int | None = None):
    """The profile's HighThroughputExecutor. ``max_workers``: the workers a node when the
    profile does not say; ``most_workers``: at most this many whatever either says (a run
    that can keep no more busy: :mod:`hpc_chat.driver.pool_size`)."""
    from parsl.addresses import address_by_interface
    from parsl.executors import HighThroughputExecutor

    kwargs = executor_kwargs(profile, allocation)
    if max_workers and "max_workers_per_node" not in kwargs:
        kwargs["max_workers_per_node"] = max_workers
    if most_workers:
        kwargs["max_workers_per_node"] = min(kwargs.get("max_workers_per_node") or most_workers,
                                             most_workers)
    if heartbeat:
        kwargs["heartbeat_period"], kwargs["heartbeat_threshold"] = heartbeat
    ex = profile.executor
    if ex.interface:
        address = address_by_interface(ex.interface)
    else:
        address = ex.address or ("127.0.0.1" if profile.scheduler == "local" else None)
    if address:
        kwargs["address"] = address
    # CurveZMQ between the interchange and every worker, said here rather than left to
    # Parsl's default: on a shared node anyone can reach the worker port, and an
    # unencrypted one lets them register as a manager and send the driver a pickle.
    return HighThroughputExecutor(label=f"{profile.name}_htex",
                                  provider=build_provider(profile, allocation=allocation),
                                  encrypted=True, **kwargs)


POOL_LAUNCH = "process_worker_pool.py"  # how Parsl's own launch line starts
POOL_START = "hpc-chat-pool-start"  # installed beside process_worker_pool.py, on its PATH


def start_engines_with_pool(config, plan: PoolStart) -> bool:
    """Make each worker pool of ``config`` load its node engines while it starts.

    The HighThroughputExecutor's ``launch_cmd`` (a documented Parsl parameter, formatted by
    Parsl and run by the launcher on every node) becomes ``hpc-chat-pool-start PLAN
    --logdir=... & exec process_worker_pool.py ...``: the engines' model load overlaps the
    pool's own start, and ``exec`` keeps the shell's pid, so the pool's manager is the
    background process's parent (:mod:`hpc_chat.worker.pool_start`). The console script is
    installed in the same ``bin/`` as ``process_worker_pool.py``, so the two run the same
    installation. The plan is base64 (safe from the shell, from a launcher's here-document and
    from ``str.format``: Parsl formats the line twice) and quoted besides.

    Left alone: a launch line the user wrote, a site whose ``model.preload`` is off or whose
    workers decode their own requests (``model.engine: worker``), and pools whose workers get
    their own GPUs (``available_accelerators``) or MPI ranks, since an engine belongs to the
    GPUs a worker sees and the pool cannot know those before its workers start. Whether any
    pool changed.
    """
    if not plan.agents or not plan.model.preload or plan.model.engine != "node":
        return False
    changed = False
    for executor in config.executors:
        command = getattr(executor, "launch_cmd", None)
        if not isinstance(command, str) or not command.startswith(POOL_LAUNCH):
            continue
        if getattr(executor, "available_accelerators", None) or \
                getattr(executor, "enable_mpi_mode", False):
            continue
        executor.launch_cmd = (f"{POOL_START} {shlex.quote(plan.to_arg())} --logdir={{logdir}} "
                               f"</dev/null >/dev/null 2>&1 & exec {command}")
        changed = True
    return changed


STRATEGY_PERIOD_S = 0.5


def build_config(profile: schema.SiteProfile, *, allocation: bool = False,
                 max_workers: int | None = None, retries: int = 0, retry_handler=None,
                 memoizer=None, monitoring=None, heartbeat: tuple[int, int] | None = None,
                 run_dir: str | None = None, most_workers: int | None = None):
    """The Parsl ``Config`` for a profile (one HighThroughputExecutor).

    Parsl's own log (``runinfo/NNN/parsl.log``) is kept at INFO: at DEBUG it copies every
    task's arguments, prompts and history included. Its routine lines for each task are left
    out (:class:`~hpc_chat.util.logs.RoutineTaskLines`). ``hpc-chat --debug`` restores DEBUG
    and every line.

    Parsl submits even the first (``init_blocks``) block on its scaling strategy's first tick,
    ``strategy_period`` after start (5 s by default): every command would wait that long for
    nothing. Each tick is cheap (the scheduler itself is asked only every
    ``status_polling_interval``), so it ticks every :data:`STRATEGY_PERIOD_S` instead.
    """
    from parsl.config import Config
    from parsl.logconfigs.file import FileLogging

    debug = bool(os.environ.get("HPC_CHAT_DEBUG"))
    quiet_routine_task_lines(not debug)
    return Config(
        executors=[build_executor(profile, allocation=allocation, max_workers=max_workers,
                                  heartbeat=heartbeat, most_workers=most_workers)],
        run_dir=run_dir or default_run_dir(),
        retries=retries,
        retry_handler=retry_handler,
        memoizer=memoizer,
        monitoring=monitoring,
        usage_tracking=0,
        strategy_period=STRATEGY_PERIOD_S,
        initialize_logging=FileLogging(
            level=logging.DEBUG if debug else logging.INFO),
    )


def site_model(profile: schema.SiteProfile) -> SiteModel:
    """The model defaults sent to workers in each task's context."""
    return SiteModel(**profile.model.model_dump())


def get_local_config(max_workers: int = 4, *, label: str | None = None,
                     run_dir: str | None = None, retries: int = 0, retry_handler=None,
                     heartbeat_period: int = 30, heartbeat_threshold: int = 120,
                     memoizer=None, monitoring=None):
    """The ``local`` site's Parsl config: one block of up to ``max_workers`` workers with one
    core each, on this machine (the original design's ``get_local_config``)."""
    from hpc_chat.sites.registry import load_profile

    profile = load_profile("local")
    if label:
        profile = profile.model_copy(update={"name": label.removesuffix("_htex")})
    return build_config(profile, max_workers=max_workers, retries=retries,
                        retry_handler=retry_handler, memoizer=memoizer, monitoring=monitoring,
                        heartbeat=(heartbeat_period, heartbeat_threshold), run_dir=run_dir)


def get_hpc_config(partition: str = "compute", nodes: int = 2, *, walltime: str = "01:00:00",
                   account: str | None = None, worker_init: str = "",
                   cores_per_node: int | None = None, max_workers: int | None = None,
                   run_dir: str | None = None):
    """Pilot jobs on a Slurm cluster: one block of ``nodes`` nodes, workers started by ``srun``
    (the original design's ``get_hpc_config``). The arguments become a site profile, so they
    are validated, and the pilot jobs drain before their walltime, as any profile's do."""
    from hpc_chat.errors import ProfileError
    from hpc_chat.util.configfile import validate

    provider = {"type": "SlurmProvider", "partition": partition, "account": account,
                "nodes_per_block": nodes, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1,
                "walltime": walltime, "cores_per_node": cores_per_node,
                "exclusive": cores_per_node is None, "worker_init": worker_init,
                "launcher": {"type": "SrunLauncher"}}
    profile = validate(schema.SiteProfile, {"name": "slurm", "provider": provider,
                                            "executor": {"max_workers_per_node": max_workers}},
                       "get_hpc_config", error=ProfileError)
    return build_config(profile, run_dir=run_dir)
