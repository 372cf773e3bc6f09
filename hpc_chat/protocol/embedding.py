"""Embeddings: what a worker asks of an engine, and what comes back.

:class:`EmbedRequest` is the inputs of one task (strings or token arrays, as OpenAI's
``input`` takes them); :class:`Embeddings` is every engine's answer (the llama.cpp embedder,
the echo model): unit-length vectors in the inputs' order, each input's token count, and how
the vectors were pooled. Both cross Parsl, Globus Compute and the node engine's socket as
plain data.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from hpc_chat.errors import PromptTooLongError

MAX_INPUTS = 2048  # OpenAI's limit for one request


class Pooling(str, Enum):
    """How token states become one vector (llama.cpp's pooling types)."""

    MEAN = "mean"
    CLS = "cls"
    LAST = "last"

    @property
    def llama(self) -> int:
        return {"mean": 1, "cls": 2, "last": 3}[self.value]  # LLAMA_POOLING_TYPE_*

    @classmethod
    def of_llama(cls, kind: int) -> Pooling:
        for pooling in cls:
            if pooling.llama == kind:
                return pooling
        raise ValueError(f"llama.cpp pooling type {kind} gives no vector per input")


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[str | list[int]] = Field(min_length=1, max_length=MAX_INPUTS)
    pooling: Pooling | None = None  # the agent's setting; None: the model's own, else mean


class Embeddings(BaseModel):
    vectors: list[list[float]]
    tokens: list[int]  # each input's
    dimensions: int
    pooling: Pooling
    seconds: float = 0.0

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens)


def input_too_long(index: int, tokens: int, limit: int) -> PromptTooLongError:
    """The one message for an input longer than a model embeds, wherever that is found."""
    return PromptTooLongError(f"input[{index}] has {tokens} tokens; the model embeds at most "
                              f"{limit}: shorten or split it")


def named_input(message: str) -> tuple[int, str] | None:
    """The input an error message names (:func:`input_too_long` and the embedders' other
    refusals begin ``input[i]``) and what it says of it; None when it names none."""
    if not message.startswith("input["):
        return None
    index, found, rest = message[len("input["):].partition("]")
    return (int(index), rest) if found and index.isdigit() else None
