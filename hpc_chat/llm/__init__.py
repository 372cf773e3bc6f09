"""The local LLM engine: model resolution and llama.cpp inference that stays loaded per process."""

from hpc_chat.llm.engine import ChatEngine
from hpc_chat.llm.models import ModelSpec, available_models, model_location, resolve_model
from hpc_chat.llm.registry import cache_info, get_batched_engine, get_engine
from hpc_chat.protocol.request import Completion, GenRequest, Sampling

__all__ = ["ChatEngine", "Completion", "GenRequest", "ModelSpec", "Sampling", "available_models",
           "cache_info", "get_batched_engine", "get_engine", "model_location", "resolve_model"]
