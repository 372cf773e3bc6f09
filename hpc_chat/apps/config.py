"""Parsl configurations for the local machine and for a generic Slurm cluster.

These are the seed's ``get_local_config`` / ``get_hpc_config``. Site profiles
(:mod:`hpc_chat.sites`) build richer configs with the same helpers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SrunLauncher
from parsl.providers import LocalProvider, SlurmProvider

from hpc_chat.paths import hpc_chat_home


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


def get_local_config(max_workers: int = 4, *, label: str = "local_htex",
                     run_dir: str | None = None, retries: int = 0, retry_handler=None,
                     heartbeat_period: int = 30, heartbeat_threshold: int = 120,
                     memoizer=None, monitoring=None) -> Config:
    """A HighThroughputExecutor on this machine: one block of up to ``max_workers`` workers.

    Workers get one core each (``cores_per_worker=1``), so on a 2-core machine at most 2 start
    whatever ``max_workers`` says; each worker's model uses its share of the cores.
    """
    return Config(
        executors=[HighThroughputExecutor(
            label=label,
            address="127.0.0.1",
            max_workers_per_node=max_workers,
            cores_per_worker=1,
            heartbeat_period=heartbeat_period,
            heartbeat_threshold=heartbeat_threshold,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1,
                                   worker_init=with_driver_path()),
        )],
        run_dir=run_dir or default_run_dir(),
        retries=retries,
        retry_handler=retry_handler,
        memoizer=memoizer,
        monitoring=monitoring,
        usage_tracking=0,
    )


def get_hpc_config(partition: str = "compute", nodes: int = 2, *, walltime: str = "01:00:00",
                   account: str | None = None, worker_init: str = "",
                   cores_per_node: int | None = None, max_workers: int | None = None,
                   run_dir: str | None = None) -> Config:
    """Pilot jobs on a Slurm cluster: one block of ``nodes`` nodes, workers started by ``srun``."""
    return Config(
        executors=[HighThroughputExecutor(
            label="slurm_htex",
            max_workers_per_node=max_workers,
            cores_per_worker=1,
            provider=SlurmProvider(
                partition=partition, account=account, nodes_per_block=nodes,
                init_blocks=1, min_blocks=0, max_blocks=1, walltime=walltime,
                cores_per_node=cores_per_node, exclusive=cores_per_node is None,
                launcher=SrunLauncher(), worker_init=with_driver_path(worker_init)),
        )],
        run_dir=run_dir or default_run_dir(),
        usage_tracking=0,
    )
