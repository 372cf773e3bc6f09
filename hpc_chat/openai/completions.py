"""OpenAI's legacy text completions (``/v1/completions``) in terms of a chat request, and back.

Each prompt is continued as it is, without the agent's chat template or system prompt (the
worker decodes ``GenRequest.prompt``); a list of prompts gives one choice per prompt, in order.
The request is checked here (:func:`chat_bodies`), then each prompt goes through the same
checks and workers as a chat completion; the answers become a ``text_completion``
(:func:`completion_object`) with the legacy ``logprobs`` shape (:func:`legacy_logprobs`).
"""

from __future__ import annotations

import uuid
from typing import Any

from hpc_chat.openai.params import ROUTED_MODEL, RequestError
from hpc_chat.protocol.result import FinishReason, Usage

URL = "/v1/completions"
MAX_PROMPTS = 64
MAX_LOGPROBS = 5  # OpenAI's bound for this API
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this API
PASSED = ("model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "n",
          "top_k", "repeat_penalty", "user", "stream_options")
# Taken at the value that changes nothing.
NEUTRAL = {"best_of": (None, 1), "presence_penalty": (None, 0, 0.0),
           "frequency_penalty": (None, 0, 0.0), "logit_bias": (None, {}), "suffix": (None, "")}


def chat_bodies(body: dict[str, Any]) -> list[dict[str, Any]]:
    """One chat body per prompt (the prompt as its one user message); raises
    :class:`RequestError` naming the key at fault."""
    for key, value in body.items():
        if key in PASSED or key in ("prompt", "echo", "logprobs"):
            continue
        if key in NEUTRAL and any(value == v and type(value) is type(v) for v in NEUTRAL[key]):
            continue
        what = ("a suffix (fill in the middle) is not supported: send the text before it as "
                "the prompt") if key == "suffix" else f"{key} is not supported here"
        raise RequestError(f"{what} (value {str(value)[:60]!r})", param=key,
                           code="unsupported_parameter")
    if body.get("model") == ROUTED_MODEL:
        raise RequestError(f"a text completion continues one model's text: name an agent, "
                           f"not {ROUTED_MODEL!r} (GET /v1/models lists them)", param="model")
    prompts = body.get("prompt")
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, list) or not 0 < len(prompts) <= MAX_PROMPTS or \
            not all(isinstance(p, str) and p for p in prompts):
        raise RequestError(f"prompt must be a non-empty string or a list of 1 to "
                           f"{MAX_PROMPTS} non-empty strings (token arrays are not taken here)",
                           param="prompt")
    if body.get("stream") is True and len(prompts) > 1:
        raise RequestError("a streamed completion takes one prompt", param="prompt")
    echo, logprobs = body.get("echo", False), body.get("logprobs")
    if not isinstance(echo, bool):
        raise RequestError("echo must be true or false", param="echo")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                 or not 0 <= logprobs <= MAX_LOGPROBS):
        raise RequestError(f"logprobs must be an integer from 0 to {MAX_LOGPROBS}",
                           param="logprobs")
    if echo and logprobs is not None:
        raise RequestError("echo with logprobs asks for the prompt's own logprobs, which are "
                           "not computed here; leave one of them out", param="echo")
    common = {k: body[k] for k in PASSED if k in body and k not in ("user", "stream_options")}
    common.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    if logprobs is not None:
        common.update(logprobs=True, top_logprobs=logprobs)
    return [{**common, "messages": [{"role": "user", "content": p}]} for p in prompts]


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def choice(index: int, prompt: str, result: dict[str, Any], echo: bool,
           logprobs: dict[str, Any] | None) -> dict[str, Any]:
    """One prompt's choice: its continuation (after the prompt, with ``echo``)."""
    text = result.get("response") or ""
    return {"index": index, "text": (prompt + text) if echo else text,
            "logprobs": legacy_logprobs(logprobs, len(prompt)), "finish_reason":
            result.get("finish_reason") or FinishReason.STOP.value}


def legacy_logprobs(chat: dict[str, Any] | None, start: int) -> dict[str, Any] | None:
    """The chat shape's ``{"content": [...]}`` in this API's: ``tokens``, ``token_logprobs``,
    ``top_logprobs`` (a token -> logprob map per token) and ``text_offset`` (counted from the
    prompt's start, ``start`` being its length, as OpenAI's, echo or not)."""
    if not chat:
        return None
    content, offsets, at = chat["content"], [], start
    for t in content:
        offsets.append(at)
        at += len(t["token"])
    return {"tokens": [t["token"] for t in content],
            "token_logprobs": [t["logprob"] for t in content],
            "top_logprobs": [{a["token"]: a["logprob"] for a in t["top_logprobs"]}
                             for t in content],
            "text_offset": offsets}


def chat_logprobs(legacy: dict[str, Any] | None) -> dict[str, Any] | None:
    """:func:`legacy_logprobs` back in the chat shape (a batch output line is made from
    that shape); each token's ``bytes`` are its text's UTF-8."""
    if not legacy:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [{**entry(t, lp), "top_logprobs": [entry(k, v) for k, v in top.items()]}
                        for t, lp, top in zip(legacy["tokens"], legacy["token_logprobs"],
                                              legacy["top_logprobs"])],
            "refusal": None}


def completion_object(model: str, choices: list[dict[str, Any]], results: list[dict[str, Any]],
                      created: float, fingerprint: str,
                      provenance: list[dict[str, Any] | None]) -> dict[str, Any]:
    usage = sum((Usage.of(r) for r in results), Usage())
    return {"id": completion_id(), "object": "text_completion", "created": int(created),
            "model": model, "choices": choices, "usage": usage.openai(),
            "system_fingerprint": fingerprint, "hpc_chat": {"prompts": provenance}}


def chunk(ident: str, created: int, model: str, fingerprint: str, text: str,
          finish: str | None = None, logprobs: dict[str, Any] | None = None, start: int = 0,
          **extra) -> dict[str, Any]:
    """One streamed ``text_completion`` event."""
    return {"id": ident, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "text": text, "logprobs": legacy_logprobs(logprobs, start),
                         "finish_reason": finish}], **extra}
