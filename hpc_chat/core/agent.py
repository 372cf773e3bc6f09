"""Re-export: agent personas live in :mod:`hpc_chat.agents.config`."""

from hpc_chat.agents.config import (  # noqa: F401
    AgentConfig,
    AgentPerformanceConfig,
    AgentSettings,
    CollaborationConfig,
)
from hpc_chat.util.configfile import StrictModel  # noqa: F401
