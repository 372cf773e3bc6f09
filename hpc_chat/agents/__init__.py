"""Agents: personas, routing of messages to them, aggregation of their answers, the cache."""

from hpc_chat.agents.aggregate import aggregate_responses
from hpc_chat.agents.collaborative import EnhancedCollaborativeAgent
from hpc_chat.agents.config import AgentConfig
from hpc_chat.agents.routing import Route, keyword_score, route

__all__ = ["AgentConfig", "EnhancedCollaborativeAgent", "Route", "aggregate_responses",
           "keyword_score", "route"]
