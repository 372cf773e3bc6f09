"""Embeddings through the workflow's workers: one request's inputs, sliced, spread, joined.

An embedding request names an agent (its model embeds; ``/v1/models`` lists which can). Its
inputs are cut into slices of :data:`SLICE` and every slice is a task of its own, submitted at
once, so a long list spreads over every worker and every pilot job's node engine; the vectors
come back in the inputs' order. Nothing is stored: there is no conversation and no cache.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hpc_chat.errors import HpcChatError
from hpc_chat.protocol.context import TaskContext
from hpc_chat.protocol.embedding import Embeddings, named_input
from hpc_chat.worker.tasks import embed_task

SLICE = 64  # inputs per task: enough to fill a decode, few enough to spread a long list


def slices(inputs: int) -> int:
    """How many tasks (slices of :data:`SLICE`) ``inputs`` inputs make."""
    return -(-inputs // SLICE)


@dataclass
class EmbeddingResult:
    """The vectors of every input, in order, and what made them."""

    vectors: list[list[float]]
    tokens: list[int]
    model: str
    dimensions: int
    pooling: str
    tasks: list[dict[str, Any]] = field(default_factory=list)  # per slice: where it ran

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens)


async def embed(workflow, agent: str, inputs: list) -> EmbeddingResult:
    """Embed ``inputs`` with ``agent``'s model on the workflow's workers. An input the model
    refuses raises the worker's own error (never Parsl's wrapper), naming the input by its
    index in the whole request."""
    workflow.check_agents([agent])
    config = workflow.agents[agent].config
    context = TaskContext(model=workflow.site_model).model_dump()
    perf = config.config.performance
    timeout = workflow.loaded.settings.performance.timeout_seconds
    starts = list(range(0, len(inputs), SLICE))
    tasks = [workflow.executor.submit(embed_task, config.to_dict(), inputs[s:s + SLICE],
                                      context, time_limit=timeout,
                                      retry_attempts=perf.retry_attempts) for s in starts]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    vectors: list[list[float]] = []
    tokens: list[int] = []
    made: list[dict[str, Any]] = []
    first: Embeddings | None = None
    for start, outcome in zip(starts, outcomes):
        if isinstance(outcome, BaseException):
            raise _renumbered(outcome, start)
        out = Embeddings.model_validate(outcome["embeddings"])
        if first is not None and out.dimensions != first.dimensions:
            raise HpcChatError(f"the workers of {agent} gave vectors of {first.dimensions} "
                               f"and {out.dimensions} dimensions (two different models?)")
        first = first or out
        vectors += out.vectors
        tokens += out.tokens
        made.append({k: outcome.get(k) for k in ("model_path", "engine", "worker")})
    return EmbeddingResult(vectors=vectors, tokens=tokens, model=outcomes[0]["model"],
                           dimensions=first.dimensions, pooling=first.pooling.value,
                           tasks=made)


def _renumbered(exc: BaseException, start: int) -> BaseException:
    """A slice's error, unwrapped from Parsl's, with its ``input[i]`` counted from the start
    of the whole request."""
    exc = getattr(exc, "e_value", None) or exc
    named = named_input(str(exc))
    if named is None or not start:
        return exc
    index, rest = named
    try:
        return type(exc)(f"input[{index + start}]{rest}")
    except TypeError:  # an exception type that takes other arguments: as it is
        return exc
