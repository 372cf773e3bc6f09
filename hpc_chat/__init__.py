"""hpc_chat: multi-agent chat with local LLMs on HPC allocations.

Requests are routed to YAML-defined agents, answered in parallel by llama.cpp models that stay
loaded inside Parsl workers (on the local machine or in pilot jobs on compute nodes), aggregated,
and stored in a conversation history.
"""

__version__ = "0.1.0"
