"""The local LLM engine: model resolution and llama.cpp inference that stays loaded per process."""

from hpc_chat.llm.engine import ChatEngine, Completion, cache_info, get_engine
from hpc_chat.llm.models import ModelSpec, available_models, resolve_model

__all__ = ["ChatEngine", "Completion", "ModelSpec", "available_models", "cache_info",
           "get_engine", "resolve_model"]
