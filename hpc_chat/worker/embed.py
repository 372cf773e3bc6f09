"""Embeddings on a worker: an agent's model turns a task's inputs into vectors.

In a Parsl worker the inputs go to the node's engine (the model is loaded once per node, and its
embedding context sits beside the batched context that decodes answers); elsewhere (a site whose
``model.engine`` is ``worker``, local threads) the model is loaded in this process. Either way
the result is plain data: :class:`~hpc_chat.protocol.embedding.Embeddings` and where it ran.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hpc_chat.agents.config import AgentConfig
from hpc_chat.errors import ConfigError
from hpc_chat.llm.registry import get_embedder, get_engine
from hpc_chat.protocol.context import TaskContext
from hpc_chat.protocol.embedding import EmbedRequest
from hpc_chat.util.configfile import format_validation_error
from hpc_chat.worker import engine_client, time_limit
from hpc_chat.worker.chat import model_name, model_spec, worker_identity


def process_embed(agent_config: dict, inputs: list, context: dict) -> dict[str, Any]:
    """Embed ``inputs`` with the agent's model: ``{"embeddings", "agent", "model",
    "model_path", "engine", "worker"}``. An input the model cannot take raises, naming it."""
    try:
        agent = AgentConfig.model_validate(agent_config)
        ctx = TaskContext.model_validate(context or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error("embedding task", exc)) from None
    settings = agent.config.model_dump()
    name = model_name(settings, ctx.model)
    spec = model_spec(settings, ctx.model, name)
    try:
        request = EmbedRequest(inputs=inputs, pooling=agent.config.pooling)
    except ValidationError as exc:
        raise ValueError(format_validation_error("input", exc).replace("\n", "; ")) from None
    engine = engine_client.settings(ctx.model)
    if engine_client.wanted(engine):
        out, made_by = engine_client.embed(spec, engine, request)
    else:
        loaded, _ = get_engine(spec)
        limit = time_limit.in_process()
        out, made_by = get_embedder(loaded, request.pooling).embed(request.inputs), None
        time_limit.check(limit)  # one llama.cpp call: it cannot be stopped half-way
    return {"embeddings": out.model_dump(), "agent": agent.name, "model": name,
            "model_path": spec.path, "engine": made_by, "worker": worker_identity()}
