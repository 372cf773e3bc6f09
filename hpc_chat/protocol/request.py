"""One request type for every engine, the messages and the sampling settings, and what every
engine answers, a :class:`Completion`.

:class:`Sampling` holds each setting's default and bounds once; an agent's YAML settings extend
it (:class:`hpc_chat.agents.config.AgentSettings`), and :class:`GenRequest` is what the
unbatched, batched and echo engines all take. :func:`prompt_too_long` is the one message for a
prompt that does not fit the context window, wherever that is found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from hpc_chat.errors import PromptTooLongError
from hpc_chat.protocol.output_format import OutputFormat
from hpc_chat.protocol.result import Usage


class Mode(str, Enum):
    """How a workflow's agents answer one message (:mod:`hpc_chat.agents.modes`): a request
    chooses it (``--mode``, the body's ``hpc_chat_mode``) over the workflow's."""

    ROUTE = "route"
    SYNTHESIZE = "synthesize"
    REVIEW = "review"


class Sampling(BaseModel):
    """How tokens are drawn; llama-cpp-python's chat-completion defaults."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(256, ge=1, le=32768)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    repeat_penalty: float = Field(1.1, gt=0.0)
    seed: int | None = Field(None, ge=0)
    stop: list[str] = Field(default_factory=list)

    def sampling(self) -> dict[str, Any]:
        """Just the sampling settings (a subclass's other fields left out)."""
        return {name: getattr(self, name) for name in Sampling.model_fields}


class GenRequest(Sampling):
    """One chat completion to compute: the messages, their sampling, the format the answer is
    constrained to, when there is one (its grammar applies to this request's sequence alone),
    and the tools offered to the model.

    Messages are in OpenAI's shape: ``{"role", "content"}``, an assistant turn that called
    tools with ``tool_calls`` (``[{"id", "type": "function", "function": {"name",
    "arguments"}}]``, ``arguments`` a JSON string), and a result as ``{"role": "tool",
    "tool_call_id", "name", "content"}``. ``content`` is always text. How they and ``tools``
    reach the model is the chat template's to decide
    (:class:`hpc_chat.llm.template.ChatTemplate`)."""

    messages: list[dict[str, Any]]
    output: OutputFormat | None = None
    tools: list[dict[str, Any]] | None = None  # OpenAI's ``tools``, as offered (not ``none``)
    # Not how tokens are drawn but what is reported of each: None, nothing; N, each token's
    # log-probability and its N likeliest alternatives (hpc_chat.llm.logprobs).
    logprobs: int | None = Field(None, ge=0, le=20)
    # A text completion (/v1/completions): this text is continued as it is, without the chat
    # template; ``messages`` then hold it as the one user message, for the record.
    prompt: str | None = None
    # llama.cpp's benchmarking option (llama-server's ``ignore_eos``): the end-of-generation
    # tokens are never drawn, so the answer runs to ``max_tokens`` (or a stop string). It
    # makes answer lengths equal across engines; a format's grammar needs its end, and a
    # token's logprobs would be read from a row with those tokens taken out, so neither mixes.
    ignore_eos: StrictBool = False

    @model_validator(mode="after")
    def _ignore_eos_alone(self) -> GenRequest:
        if self.ignore_eos and (self.output is not None or self.logprobs is not None):
            raise ValueError("ignore_eos cannot be combined with a response_format, grammar, "
                             "tools or logprobs")
        return self

    @property
    def text_allowed(self) -> bool:
        """Whether the answer may be text rather than a call (``tool_choice`` auto)."""
        return self.output is not None and self.output.text_allowed


def stored_answer_mark(message: dict[str, Any]) -> dict[str, str]:
    """``{"agent": NAMES}`` when ``message`` is an answer the workflow stored in its history (it
    names the agents that made it), else ``{}``. Every copy of a message carries this mark, so
    the engines can tell such an answer, which they evaluate as one chunk, from one an OpenAI
    client sends back, which they evaluate token by token (:mod:`hpc_chat.llm.chunks`)."""
    agent = message.get("agent")
    return {"agent": str(agent)} if message.get("role") == "assistant" and agent else {}


def prompt_too_long(prompt_tokens: int, max_tokens: int, n_ctx: int, *,
                    estimate: bool = False) -> PromptTooLongError:
    about = "about " if estimate else ""
    return PromptTooLongError(
        f"the prompt ({about}{prompt_tokens} tokens) plus max_tokens={max_tokens} does not fit "
        f"the model's context window of {n_ctx} tokens; shorten the prompt or the history, "
        f"lower max_tokens, or raise n_ctx")


@dataclass
class Completion:
    """One chat completion: the text, token usage and where the time went."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model_load_s: float
    model_loaded_now: bool
    generation_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.generation_s if self.generation_s > 0 else 0.0

    def usage(self) -> dict[str, int]:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                     cached_tokens=self.extra.get("cached_prompt_tokens", 0)).model_dump()

    def timings(self) -> dict[str, Any]:
        return {"model_load_s": self.model_load_s, "model_loaded_now": self.model_loaded_now,
                "generation_s": self.generation_s, "tokens_per_s": self.tokens_per_s}
