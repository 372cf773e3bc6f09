"""``EnhancedCollaborativeAgent``: one persona, able to score a message and answer it in-process."""

from __future__ import annotations

from typing import Any

from hpc_chat.agents.routing import keyword_hits, keyword_score
from hpc_chat.core.agent import AgentConfig


class EnhancedCollaborativeAgent:
    """Wraps an :class:`AgentConfig`.

    The workflow sends ``agent.config.to_dict()`` to workers rather than this object, so nothing
    here has to be picklable; :meth:`respond` is for direct, in-process use (tests, notebooks).
    """

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

    def score(self, message: str) -> float:
        """How strongly the message calls for this agent (see :mod:`hpc_chat.agents.routing`)."""
        return keyword_score(message, self.keywords)

    def matched_keywords(self, message: str) -> list[str]:
        return keyword_hits(message, self.keywords)

    def wants(self, message: str) -> bool:
        threshold = self.config.config.collaboration.delegation_threshold
        return bool(self.matched_keywords(message)) and self.score(message) >= threshold

    def respond(self, message: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
        """Answer in this process with the engine cache (the model stays loaded)."""
        from hpc_chat.apps.logic import process_chat_message  # logic imports agents.cache

        return process_chat_message(self.config.to_dict(), message, context or {})

    def __repr__(self) -> str:
        return f"EnhancedCollaborativeAgent({self.name!r})"
