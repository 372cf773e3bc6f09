"""Agents: personas, routing of messages to them, and their response cache."""

from hpc_chat.agents.collaborative import EnhancedCollaborativeAgent
from hpc_chat.agents.routing import Route, keyword_score, route

__all__ = ["EnhancedCollaborativeAgent", "Route", "keyword_score", "route"]
