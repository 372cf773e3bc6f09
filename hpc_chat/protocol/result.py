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

from pydantic import BaseModel


class FinishReason(str, Enum):
    """Why an answer ended: a stop (the model's end or a stop string), ``max_tokens``, or its
    client went away (a partial answer: never cached, never stored)."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


class Usage(BaseModel):
    """Tokens of a request: what the prompt took and what the answer generated."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def of(cls, record: dict[str, Any]) -> Usage:
        """The usage a result (or an output line) records; a missing count is 0."""
        return cls(prompt_tokens=record.get("prompt_tokens") or 0,
                   completion_tokens=record.get("completion_tokens") or 0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens)

    def openai(self) -> dict[str, int]:
        """OpenAI's ``usage`` object."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def provenance_of(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A result's provenance: the site and driver, and each agent's record from its worker
    (:mod:`hpc_chat.worker.provenance`). None for a line that never ran."""
    if result and "responses" not in result and "provenance" in result:
        return result["provenance"]  # an earlier output line, copied to a new line number
    if not result or not result.get("responses"):
        return None
    agents = [{"agent": r.get("agent"), "cached": bool(r.get("cached")),
               **(r.get("provenance") or {})}
              for r in result["responses"] if not r.get("error")]
    version = next((a.get("hpc_chat") for a in agents if a.get("hpc_chat")), None)
    return {"hpc_chat": version, "site": result.get("site"),
            "driver_host": socket.gethostname(), "agents": agents}
