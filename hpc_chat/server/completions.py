"""``POST /v1/completions``: OpenAI's legacy text completions, each prompt continued as it is
(no chat template, no system prompt) by the same workers as a chat completion
(:mod:`hpc_chat.server.chat`, :mod:`hpc_chat.openai.completions`)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi.responses import StreamingResponse

from hpc_chat.openai import chat as openai_chat
from hpc_chat.openai import completions as shapes
from hpc_chat.openai.params import RequestError
from hpc_chat.protocol.result import FinishReason, Usage, provenance_of
from hpc_chat.server.chat import Started, close, ending, pieces, start_chat
from hpc_chat.server.errors import ApiError
from hpc_chat.server.state import ServerState

OPTIONS = {"text_completion": True, "mode": "route"}  # one model's text: no rounds


async def create_completion(state: ServerState, body: dict[str, Any], fingerprint: str):
    try:
        bodies = shapes.chat_bodies(body)
    except RequestError as exc:
        raise ApiError(400, str(exc), code=exc.code, param=exc.param) from None
    prompts = [b["messages"][0]["content"] for b in bodies]
    echo = body.get("echo") is True
    if body.get("stream") is True:
        started = await start_chat(state, bodies[0], options=OPTIONS)
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        return StreamingResponse(events(state, started, prompts[0], echo, fingerprint, usage),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    tasks = [asyncio.ensure_future(start_chat(state, b, options=OPTIONS)) for b in bodies]
    try:
        started = await asyncio.gather(*tasks)
    except BaseException:  # one prompt refused: the others are not left running
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    results = [s.task.result() for s in started]
    choices = [shapes.choice(i, p, r, echo, openai_chat.logprobs_of(r))
               for i, (p, r) in enumerate(zip(prompts, results))]
    return shapes.completion_object(body.get("model"), choices, results, time.time(),
                                    fingerprint, [provenance_of(r) for r in results])


async def events(state: ServerState, started: Started, prompt: str, echo: bool,
                 fingerprint: str, usage: bool):
    """The continuation as ``text_completion`` events: the text as the worker sends it, the
    finish reason with the provenance (and the logprobs, whole, when asked), the usage (when
    ``stream_options.include_usage``), ``[DONE]``."""
    ident, created, model = shapes.completion_id(), int(time.time()), started.req.model

    def event(text: str, finish: str | None = None, **extra) -> str:
        data = shapes.chunk(ident, created, model, fingerprint, text, finish, **extra)
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    sent = ""
    try:
        if echo:
            yield event(prompt)
        async for piece in pieces(state, started):
            sent += piece
            yield event(piece)
        end = await ending(started, sent)
        result = end.result
        if end.error is not None:
            yield f"data: {json.dumps(end.error.body())}\n\n"
        else:
            if end.rest:
                yield event(end.rest)
            yield event("", result["finish_reason"] or FinishReason.STOP.value,
                        logprobs=openai_chat.logprobs_of(result), start=len(prompt),
                        hpc_chat={"prompts": [provenance_of(result)]})
            if usage:
                data = {**shapes.chunk(ident, created, model, fingerprint, ""),
                        "choices": [], "usage": Usage.of(result).openai()}
                yield f"data: {json.dumps(data)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        close(state, started)
