"""``EnhancedCollaborativeAgent``: one persona of the workflow, by name.

Which agents answer a message is decided by :mod:`hpc_chat.agents.routing`; answering happens
in workers (:mod:`hpc_chat.worker.chat`), which get ``agent.config.to_dict()`` rather than this
object, so nothing here has to be picklable.
"""

from __future__ import annotations

from hpc_chat.agents.config import AgentConfig


class EnhancedCollaborativeAgent:
    """Wraps an :class:`AgentConfig`."""

    def __init__(self, agent_config: AgentConfig):
        self.config = agent_config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def description(self) -> str:
        return self.config.description

    @property
    def keywords(self) -> list[str]:
        return self.config.config.collaboration.specialization_keywords

    def __repr__(self) -> str:
        return f"EnhancedCollaborativeAgent({self.name!r})"
