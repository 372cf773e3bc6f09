"""What a workflow result says of an answer: why it ended, the tokens it took, and its
provenance record, as the batch writer and the server give it.

Each agent's record comes from the worker that made the answer
(:mod:`hpc_chat.worker.provenance`), with the messages the driver put back
(:func:`hpc_chat.worker.chat.decoded_messages`); this adds the site and the driver's host.
"""

from __future__ import annotations

import socket
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FinishReason(str, Enum):
    """Why an answer ended: a stop (the model's end or a stop string), ``max_tokens``, or its
    client went away (a partial answer: never cached, never stored); OpenAI's reply says
    ``tool_calls`` for a stop whose answer calls a tool."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    TOOL_CALLS = "tool_calls"  # OpenAI's: the answer is a call to one of the request's tools


class Usage(BaseModel):
    """Tokens of a request: what the prompt took and what the answer generated, and how many
    of the prompt's tokens the engine found in its cache, evaluated for an earlier request (a
    shared system prompt, a conversation's earlier turns: OpenAI's ``cached_tokens``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def of(cls, record: dict[str, Any]) -> Usage:
        """The usage a result (or an output line) records; a missing count is 0."""
        return cls(prompt_tokens=record.get("prompt_tokens") or 0,
                   completion_tokens=record.get("completion_tokens") or 0,
                   cached_tokens=record.get("cached_tokens") or 0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens,
                     cached_tokens=self.cached_tokens + other.cached_tokens)

    def openai(self) -> dict[str, Any]:
        """OpenAI's ``usage`` object."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}


class WorkerIdentity(BaseModel):
    """Where an answer was made: the host, the worker's pid, Parsl's rank and block."""

    host: str
    pid: int
    rank: str | None = None
    block: str | None = None


class Timings(BaseModel):
    model_load_s: float
    model_loaded_now: bool
    generation_s: float
    tokens_per_s: float
    start: float
    end: float


class FormatVerdict(BaseModel):
    """The format an answer was decoded under, and whether the answer fits it."""

    kind: str
    name: str | None = None
    sha256: str
    valid: bool
    error: str | None = None


class AgentAnswer(BaseModel):
    """One agent's answer as its worker sends it back (over Parsl, Globus Compute or the
    token hub) and the driver, the cache and the batch writer read it. No copy of the
    conversation: the driver rebuilds the decoded messages into the provenance."""

    model_config = ConfigDict(extra="forbid")

    content: str
    agent: str
    model: str
    model_path: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    history_turns_used: int
    cached: bool = False
    worker: WorkerIdentity
    n_threads: int
    batched: bool
    engine: dict[str, Any] | None = None
    # the node engine's sequences and waiting requests as this answer ended (the server's
    # status page); not provenance: it says nothing of how the answer was made
    engine_load: dict[str, int] | None = None
    output_format: FormatVerdict | None = None
    # each token's, when asked (OpenAI's choices[].logprobs.content: hpc_chat.llm.logprobs)
    logprobs: list[dict[str, Any]] | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        """Plain JSON data, as every channel carries it (``output_format``, ``logprobs`` and
        ``engine_load`` only when the answer has them)."""
        return self.model_dump(mode="json", exclude={
            k for k in ("output_format", "logprobs", "engine_load") if getattr(self, k) is None})


class RouteTaken(BaseModel):
    agent: str
    score: float
    matched: list[str]
    fallback: bool


class RequestResult(BaseModel):
    """One request's result, as the workflow returns it to every caller (the CLI, the batch
    writer, the server): the aggregated answer, or why it failed, and each agent's own answer
    (an :class:`AgentAnswer`'s data, with the route that chose it, or that agent's failure)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Any
    ok: bool
    response: str | None
    agents: list[str]
    latency_s: float
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int = 0  # of the prompt tokens, those the engines found in their caches
    finish_reason: FinishReason | None  # None when it failed
    error: str | None
    error_kind: str | None
    error_code: str | None
    cached: bool
    site: str | None
    routes: list[RouteTaken]
    responses: list[dict[str, Any]]
    # synthesize and review only (hpc_chat.agents.modes): the mode, and every round's
    # answers in order ({round, step, answers: [{agent, content, model, usage, ...}]})
    mode: str | None = None
    rounds: list[dict[str, Any]] | None = None


def provenance_of(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A result's provenance: the site and driver, and each agent's record from its worker
    (:mod:`hpc_chat.worker.provenance`). None for a line that never ran."""
    if result and "responses" not in result and "provenance" in result:
        return result["provenance"]  # an earlier output line, copied to a new line number
    if not result or not result.get("responses"):
        return None
    agents = [{"agent": r.get("agent"), "cached": bool(r.get("cached")),
               **(r.get("provenance") or {}),
               **({"usage": r["usage"]} if r.get("usage") else {})}  # its own: a line sums them
              for r in result["responses"] if not r.get("error")]
    version = next((a.get("hpc_chat") for a in agents if a.get("hpc_chat")), None)
    made = {"hpc_chat": version, "site": result.get("site"),
            "driver_host": socket.gethostname(), "agents": agents}
    if result.get("rounds"):  # synthesize, review: how the reply came about, round by round
        made.update(mode=result.get("mode"), rounds=result["rounds"])
    return made
