"""OpenAI's chat completion JSON, built in one place.

A workflow result becomes a whole ``chat.completion`` (the server's reply to a request, the
body of an OpenAI batch output line) or, streamed, ``chat.completion.chunk`` events: the
server and the batch writer both call these, so a field added here reaches every client.
``hpc_chat`` is our extension field: the answer's provenance (clients that do not know it
ignore it).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hpc_chat.protocol.result import FinishReason, Usage
from hpc_chat.structured.tools import parse_call


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def system_fingerprint(provenance: dict[str, Any] | None) -> str | None:
    """hpc_chat's version and the model files' sha256 prefixes: equal fingerprints, same
    software and weights."""
    if not provenance:
        return None
    models = [a["model_sha256"][:12] if a.get("model_sha256") else str(a.get("model"))
              for a in provenance.get("agents", [])]
    return f"hpc_chat-{provenance.get('hpc_chat')}-" + "+".join(models)


def chat_completion(model: str, result: dict[str, Any], created: float,
                    provenance: dict[str, Any] | None, *,
                    fingerprint: str | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object for an answered request (``fingerprint``: the
    ``system_fingerprint``, by default from the provenance's model files)."""
    reply, finish = message(result, provenance)
    return {
        "id": completion_id(), "object": "chat.completion", "created": int(created),
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": logprobs_of(result),
                     "finish_reason": finish}],
        "usage": Usage.of(result).openai(),
        "system_fingerprint": fingerprint or system_fingerprint(provenance),
        "hpc_chat": provenance,
    }


def logprobs_of(result: dict[str, Any]) -> dict[str, Any] | None:
    """``choices[].logprobs``: each token's, when the request asked for them and one agent
    answered (the routed answer of several agents is their texts joined: no one model's
    tokens), or a collaboration's reply was decoded for it (a synthesis; a vote's answer was
    decoded before it was chosen, without them)."""
    if isinstance(result.get("logprobs"), dict):  # a batch output line keeps them here
        return result["logprobs"]
    good = [r for r in result.get("responses") or [] if not r.get("error")]
    if result.get("rounds"):  # a collaboration's reply: its own answer, the last that says it
        good = [r for r in good if r.get("content") == result.get("response")][-1:]
    if len(good) == 1 and good[0].get("logprobs") is not None:
        return {"content": good[0]["logprobs"], "refusal": None}
    return None


def message(result: dict[str, Any],
            provenance: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The assistant's message and the finish reason: a tool call (``tool_calls``, finish
    ``tool_calls``) when the request offered tools and the answer is a call to one, else the
    answer's text."""
    text = result.get("response")
    finish = result.get("finish_reason") or FinishReason.STOP.value
    agents = (provenance or {}).get("agents") or [{}]
    if (agents[0].get("output_format") or {}).get("kind") == "tools" and \
            finish == FinishReason.STOP.value:
        call = parse_call(text or "")
        if call is not None:
            name, arguments = call
            return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                 "function": {"name": name,
                              "arguments": json.dumps(arguments, ensure_ascii=False)}}]}, \
                FinishReason.TOOL_CALLS.value
    return {"role": "assistant", "content": text, "refusal": None}, finish


def chunk(ident: str, created: int, model: str, fingerprint: str, delta: dict[str, Any],
          finish: str | None = None, logprobs: dict[str, Any] | None = None,
          **extra) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a streamed answer (``extra``: our ``hpc_chat``)."""
    return {"id": ident, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                         "finish_reason": finish}], **extra}


def usage_chunk(ident: str, created: int, model: str, result: dict[str, Any]) -> dict[str, Any]:
    """The last chunk when the client asked for ``stream_options.include_usage``."""
    return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": Usage.of(result).openai()}
