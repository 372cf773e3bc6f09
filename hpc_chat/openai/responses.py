"""OpenAI's Responses API (``/v1/responses``) in terms of a chat completion, and back.

A Responses request is checked here and becomes a chat completion body
(:func:`chat_body`), which the server answers like any other (the same checks, the same
workers); the answer becomes a ``response`` object (:func:`response_object`) or, streamed, the
Responses events (:func:`event`). What a response keeps for ``previous_response_id`` is its own
turns, the input messages and the answer (:func:`turns`): the conversation is rebuilt by
following the chain, so two responses may continue the same one (a branch) without copying it.
``instructions`` are not carried over to the next response, as OpenAI does.
"""

from __future__ import annotations

import uuid
from typing import Any

from hpc_chat.openai.params import RequestError
from hpc_chat.protocol.result import FinishReason, Usage

URL = "/v1/responses"
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text", "text")
# Taken and used; echoed in the response object as OpenAI does.
USED = ("model", "input", "instructions", "max_output_tokens", "temperature", "top_p",
        "stream", "store", "previous_response_id", "text", "metadata", "user",
        "hpc_chat_mode")  # ours: how the agents answer (docs/agents.md), as on a chat
# Taken and without effect here (their neutral value, or a client's bookkeeping).
INERT = {"parallel_tool_calls": lambda v: isinstance(v, bool),
         "truncation": lambda v: v in (None, "disabled"),
         "tool_choice": lambda v: v in (None, "auto", "none"),
         "tools": lambda v: v in (None, []),
         "include": lambda v: v in (None, []),
         "background": lambda v: v in (None, False),
         "service_tier": lambda v: v in (None, "auto", "default"),
         "stream_options": lambda v: v is None or isinstance(v, dict)}


def new_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def chat_body(body: dict[str, Any], earlier: list[dict[str, str]]
              ) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The chat completion body for a Responses request that continues ``earlier`` turns
    (those of its ``previous_response_id`` chain), and its own input messages; raises
    :class:`RequestError` naming the key at fault. System and developer items join the
    ``instructions`` before everything else and, like them, are not kept for the next."""
    for key, value in body.items():
        if key not in USED and not (key in INERT and INERT[key](value)):
            what = "is not supported" if key in INERT or key in ("reasoning", "conversation",
                                                                 "prompt") else "is not known"
            hint = "; function tools are served on /v1/chat/completions" if key == "tools" \
                else ""
            raise RequestError(f"{key} {what} here (value {str(value)[:60]!r}){hint}",
                               param=key, code="unsupported_parameter")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise RequestError("instructions must be a string", param="instructions")
    given = input_messages(body.get("input"))
    system = [instructions] if instructions else []
    system += [m["content"] for m in given if m["role"] == "system"]
    new = [m for m in given if m["role"] != "system"]  # kept for the next response
    if not new or new[-1]["role"] != "user":
        raise RequestError("input must end with a user message", param="input")
    messages = ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + \
        list(earlier) + new
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                         ("top_p", "top_p"), ("stream", "stream"),
                         ("hpc_chat_mode", "hpc_chat_mode")):
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    fmt = text_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    return chat, new


def input_messages(value: Any) -> list[dict[str, str]]:
    """``input`` as chat messages: a string is the user's message; a list holds message items
    (``{"role", "content"}``, the content a string or text parts)."""
    if isinstance(value, str) and value:
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RequestError("input must be a non-empty string or a non-empty list of message "
                           "items", param="input")
    out = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind != "message" or not isinstance(item.get("role"), str) or \
                item["role"] not in ROLES:
            raise RequestError(f"{where} must be a message item with a role of "
                               f"{', '.join(ROLES)} (items of type {kind!r} are not supported "
                               f"here)", param=where)
        out.append({"role": ROLES[item["role"]], "content": _text(item.get("content"), where)})
    return out


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") in TEXT_PARTS and isinstance(p.get("text"), str)
            for p in content):
        return "".join(p["text"] for p in content)
    raise RequestError(f"{where}.content must be text (a string or input_text parts; images "
                       f"and files are not supported)", param=f"{where}.content")


def text_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` as a chat ``response_format``."""
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(text, dict) or (fmt is not None and not isinstance(fmt, dict)):
        raise RequestError("text must be an object with a format object", param="text")
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    raise RequestError("text.format.type must be text, json_object or json_schema",
                       param="text.format.type")


def turns(new: list[dict[str, str]], result: dict[str, Any]) -> list[dict[str, str]]:
    """What a stored response keeps for the next: its input messages and its answer."""
    return [*new, {"role": "assistant", "content": result.get("response") or ""}]


def response_object(ident: str, body: dict[str, Any], created: float, *,
                    result: dict[str, Any] | None = None, status: str = "completed",
                    provenance: dict[str, Any] | None = None,
                    error: dict[str, str] | None = None) -> dict[str, Any]:
    """A ``response`` object; without ``result``, the one a stream starts with (no output
    yet). An answer cut at ``max_output_tokens`` is ``incomplete``, as OpenAI's."""
    output: list[dict[str, Any]] = []
    incomplete = None
    if result is not None:
        if result.get("finish_reason") == FinishReason.LENGTH.value:
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        output = [message_item(ident, result.get("response") or "", status)]
    usage = Usage.of(result) if result is not None else None
    text = body.get("text") if isinstance(body.get("text"), dict) else None
    return {
        "id": ident, "object": "response", "created_at": int(created), "status": status,
        "model": body.get("model"), "output": output, "error": error,
        "incomplete_details": incomplete, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"), "top_p": body.get("top_p"),
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True) is not False,
        "text": text or {"format": {"type": "text"}},
        "metadata": body.get("metadata") or {}, "user": body.get("user"),
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "truncation": "disabled",
        "usage": None if usage is None else {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens},
        "hpc_chat": provenance,
    }


def message_item(ident: str, text: str, status: str) -> dict[str, Any]:
    """The answer as an output message item (its id derived from the response's)."""
    content = [output_text(text)] if status != "in_progress" else []
    return {"type": "message", "id": item_id(ident), "status": status, "role": "assistant",
            "content": content}


def item_id(ident: str) -> str:
    return "msg_" + ident.removeprefix("resp_")


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def event(kind: str, sequence: int, **fields) -> str:
    """One server-sent event of a streamed response: ``event:`` names its type, as OpenAI's."""
    import json

    data = {"type": kind, "sequence_number": sequence, **fields}
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
