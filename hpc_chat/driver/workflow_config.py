"""The workflow YAML (the original design's ``ParslChatWorkflow.yml`` format), validated.

Everything the file names is resolved here, relative to the file: agent files and the history
unit's file. Errors name the file and the key path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from hpc_chat.agents.config import AgentConfig
from hpc_chat.agents.modes import CollaborationSettings
from hpc_chat.driver.history import HistoryConfig
from hpc_chat.errors import ConfigError
from hpc_chat.util.configfile import (
    PACKAGED_CONFIG_DIR,
    StrictModel,
    load_yaml,
    resolve_config_path,
    validate,
)

DEFAULT_WORKFLOW = "config/ParslChatWorkflow.yml"


class ExecutorSection(StrictModel):
    """``type``: parsl (default), local (threads, debugging), or globus_compute (alias
    GlobusComputeExecutor) with ``endpoint_id``: tasks run on that Globus Compute endpoint."""

    type: Literal["parsl", "local", "globus_compute", "GlobusComputeExecutor"] = "parsl"
    max_workers: int = Field(4, ge=1)
    timeout: float = Field(300, gt=0)
    endpoint_id: str | None = None

    @property
    def is_globus(self) -> bool:
        return self.type in ("globus_compute", "GlobusComputeExecutor")


class AgentRef(StrictModel):
    name: str
    config_file: str


class RoutingSection(StrictModel):
    default_agent: str | None = None
    max_agents: int | None = Field(None, ge=1)


class DataUnitRef(StrictModel):
    type: Literal["memory", "sqlite"] = "memory"
    config_file: str | None = None


class ParslSection(StrictModel):
    environment: Literal["local", "hpc"] = "local"
    site: str | None = None
    monitoring: bool = False
    checkpoint_mode: Literal["task_exit", "periodic", "dfk_exit", "manual"] | None = None
    # None: the site profile's executor.heartbeat_* apply.
    heartbeat_period: int | None = Field(None, ge=1)
    heartbeat_threshold: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _hpc_needs_site(self):
        if self.environment == "hpc" and not self.site:
            raise ValueError("environment 'hpc' needs 'site: NAME' (a site profile)")
        return self


class PerformanceSection(StrictModel):
    # Accepted so the original design's files load; statistics are always collected.
    enable_metrics: bool = True
    batch_size: int = Field(5, ge=1)
    timeout_seconds: float = Field(60, gt=0)


class GenerationSection(StrictModel):
    """Workflow-wide generation options: a fixed seed makes answers reproducible; max_tokens
    overrides every agent's own value (handy for quick tests and demos)."""

    seed: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1, le=32768)


class WorkflowSettings(StrictModel):
    executor: ExecutorSection = Field(default_factory=ExecutorSection)
    agents: list[AgentRef] = Field(min_length=1)
    routing: RoutingSection = Field(default_factory=RoutingSection)
    data_units: dict[str, DataUnitRef] = Field(default_factory=dict)
    parsl: ParslSection = Field(default_factory=ParslSection)
    performance: PerformanceSection = Field(default_factory=PerformanceSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    collaboration: CollaborationSettings = Field(default_factory=CollaborationSettings)


class WorkflowConfig(StrictModel):
    name: str = "parsl_chat_workflow"
    description: str = ""
    config: WorkflowSettings


class LoadedWorkflow:
    """A validated workflow file with its agents and history unit loaded."""

    def __init__(self, path: Path, config: WorkflowConfig, agents: list[AgentConfig],
                 history: HistoryConfig):
        self.path, self.config, self.agents, self.history = path, config, agents, history

    @property
    def settings(self) -> WorkflowSettings:
        return self.config.config

    @property
    def default_agent(self) -> str:
        names = [a.name for a in self.agents]
        wanted = self.settings.routing.default_agent
        if wanted:
            return wanted
        return "balanced_agent" if "balanced_agent" in names else names[0]

    @property
    def aggregator(self) -> str:
        """The agent that writes a synthesized reply."""
        return self.settings.collaboration.aggregator or self.default_agent


def load_workflow(config_path: str | os.PathLike | None = None) -> LoadedWorkflow:
    """Read a workflow file and everything it refers to. The default is the packaged file
    itself, never a ``config/ParslChatWorkflow.yml`` that happens to be in the current
    directory (name that one with ``--config`` to use it)."""
    path = (resolve_config_path(config_path) if config_path
            else PACKAGED_CONFIG_DIR / Path(DEFAULT_WORKFLOW).name)
    config = validate(WorkflowConfig, load_yaml(path), path)
    settings = config.config
    agents = []
    for i, ref in enumerate(settings.agents):
        try:
            agent = AgentConfig.from_yaml(ref.config_file, base=path.parent)
        except ConfigError as exc:
            if "config file not found" not in str(exc):
                raise  # the message already names the agent file and key
            raise ConfigError(f"{path}: config.agents.{i}.config_file: {exc}") from None
        if agent.name != ref.name:
            raise ConfigError(f"{path}: config.agents.{i}.name: {ref.name!r} does not match the "
                              f"name {agent.name!r} in {agent.source}")
        agents.append(agent)
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: config.agents: agent names must be unique, got {names}")
    default = settings.routing.default_agent
    if default and default not in names:
        raise ConfigError(f"{path}: config.routing.default_agent: {default!r} is not one of the "
                          f"workflow's agents ({', '.join(names)})")
    collab = settings.collaboration
    for key, named in (("aggregator", [collab.aggregator] if collab.aggregator else []),
                       ("agents", collab.agents or [])):
        unknown = [a for a in named if a not in names]
        if unknown:
            raise ConfigError(f"{path}: config.collaboration.{key}: {unknown[0]!r} is not one "
                              f"of the workflow's agents ({', '.join(names)})")
    ref = settings.data_units.get("conversation_history", DataUnitRef())
    if ref.config_file:
        history = HistoryConfig.from_yaml(ref.config_file, base=path.parent)
        history = history.model_copy(update={"data_type": ref.type})
    else:
        history = HistoryConfig(data_type=ref.type, persistent=ref.type == "sqlite")
    return LoadedWorkflow(path, config, agents, history)
