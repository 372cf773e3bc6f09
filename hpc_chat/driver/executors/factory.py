"""One place that chooses and builds the executor for a workflow.

From the workflow settings, the site profile, ``--endpoint`` and ``--in-allocation``: a Globus
Compute endpoint, local threads (debugging) or Parsl workers whose ``Config`` the site profile
builds (:func:`hpc_chat.sites.build.build_config`, the only Parsl config builder).
"""

from __future__ import annotations

from collections.abc import Collection

from hpc_chat.driver.executors.base import ChatExecutor, ExecutorConfig
from hpc_chat.driver.workflow_config import LoadedWorkflow, WorkflowSettings
from hpc_chat.errors import ConfigError
from hpc_chat.protocol.context import SiteModel
from hpc_chat.protocol.engine import MAX_POOL_MODELS, AgentModel, PoolStart
from hpc_chat.sites.schema import SiteProfile


def make_executor(loaded: LoadedWorkflow, profile: SiteProfile | None, *,
                  endpoint: str | None = None, allocation: bool = False,
                  globus_state: str | None = None,
                  engines: PoolStart | None = None,
                  most_workers: int | None = None) -> ChatExecutor:
    """The executor for the workflow. ``engines``: the models its agents run on this site's
    workers, loaded by each pilot job's pool as it starts (:mod:`hpc_chat.worker.pool_start`);
    None (or no local agent) loads each at its first task. ``most_workers``: the workers a
    node's pool starts at most, when the run knows it can use no more
    (:mod:`hpc_chat.driver.pool_size`)."""
    settings = loaded.settings
    if endpoint or settings.executor.is_globus:
        from hpc_chat.driver.executors.globus import GlobusComputeExecutor

        return GlobusComputeExecutor(endpoint or settings.executor.endpoint_id,
                                     state_path=globus_state)
    config = ExecutorConfig(executor_type=settings.executor.type,
                            max_workers=settings.executor.max_workers,
                            timeout=settings.executor.timeout)
    if config.executor_type == "local":
        from hpc_chat.driver.executors.local import LocalExecutor

        return LocalExecutor(config)
    from hpc_chat.driver.executors.parsl import ParslExecutor
    from hpc_chat.worker.retry import make_retry_handler

    budget = max((a.config.performance.retry_attempts for a in loaded.agents), default=0)
    config.parsl_config = build_parsl_config(
        profile, settings, allocation=allocation, retries=budget,
        retry_handler=make_retry_handler(budget) if budget else None, most_workers=most_workers)
    if engines is not None:
        from hpc_chat.sites.build import start_engines_with_pool

        start_engines_with_pool(config.parsl_config, engines)
    return ParslExecutor(config)


def pool_start_plan(loaded: LoadedWorkflow, site_model: SiteModel,
                    remote: Collection[str] = ()) -> PoolStart:
    """The models the workers' node engines will run: every agent's but those named in
    ``remote`` (the driver calls their ``openai:...`` models itself), with the site's model
    defaults and ``--model`` (``site_model.override``); each distinct setting once."""
    agents = (AgentModel(**{key: getattr(a.config, key) for key in AgentModel.model_fields})
              for a in loaded.agents if a.name not in remote)
    return PoolStart(model=site_model, agents=list(dict.fromkeys(agents))[:MAX_POOL_MODELS])


def build_parsl_config(profile: SiteProfile, settings: WorkflowSettings, *,
                       allocation: bool = False, retries: int = 0, retry_handler=None,
                       most_workers: int | None = None):
    """The Parsl ``Config`` for a site profile and the workflow's ``parsl`` section.

    The workflow's ``executor.max_workers`` applies when the profile leaves
    ``max_workers_per_node`` unset; its ``parsl.heartbeat_*`` override the profile's when set;
    ``most_workers`` caps either.
    """
    from hpc_chat.sites.build import build_config

    # parsl.checkpoint_mode (the design's YAML has task_exit) starts no checkpointer: Parsl
    # checkpoints only apps made with cache=True, and hpc_chat's are not (its own resume and
    # response cache keep answers), so a checkpointer saved nothing and logged a warning for
    # every task: a tenth of the driver's time in a corpus-sized batch.
    monitoring = None
    if settings.parsl.monitoring:
        try:
            from parsl.monitoring import MonitoringHub

            monitoring = MonitoringHub(hub_address="127.0.0.1")
        except ImportError as exc:
            raise ConfigError(f"parsl.monitoring: true needs Parsl's monitoring extra "
                              f"(pip install 'parsl[monitoring]'): {exc}") from None
    hb = settings.parsl
    heartbeat = None
    if hb.heartbeat_period or hb.heartbeat_threshold:
        heartbeat = (hb.heartbeat_period or profile.executor.heartbeat_period,
                     hb.heartbeat_threshold or profile.executor.heartbeat_threshold)
    try:
        return build_config(profile, allocation=allocation,
                            max_workers=settings.executor.max_workers, retries=retries,
                            retry_handler=retry_handler, most_workers=most_workers,
                            monitoring=monitoring, heartbeat=heartbeat)
    except Exception as exc:  # e.g. address_by_interface for a missing interface
        raise ConfigError(f"{profile.source}: cannot build the Parsl configuration: "
                          f"{type(exc).__name__}: {exc}") from None
