"""The HTTP routes: OpenAI's chat completions and models, plus health, status and metrics.

A chat completion request is checked by the same code as an OpenAI batch line
(:func:`hpc_chat.openai_batch.parse_request`), so both accept and refuse the same things, then
answered by the workflow like any other request: routed (model ``auto``) or by the named
agent, decoded in the workers' batches. ``stream: true`` sends OpenAI's chunks over
server-sent events as the worker generates them (:mod:`hpc_chat.tokenstream`); a client that
disconnects stops its answer at the next token. Errors have OpenAI's shape and status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hpc_chat.openai_batch import CHAT_URL, ROUTED_MODEL, RequestError, parse_request
from hpc_chat.server.auth import authorized
from hpc_chat.server.state import ServerState

log = logging.getLogger(__name__)

OPEN_ROUTES = {"/health"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str, param: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.param, self.kind = status, code, param, kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(str(self), self.kind, self.code, self.param),
                            status_code=self.status, headers=self.headers)


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="hpc_chat", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path not in OPEN_ROUTES and \
                not authorized(request.headers.get("authorization"), state.key):
            return ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY' "
                                 "(the key is in $HPC_CHAT_API_KEY or the file hpc-chat serve "
                                 "named)", code="invalid_api_key").response()
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > state.max_body:
            return ApiError(413, f"the request body is over {state.max_body} bytes",
                            code="request_too_large").response()
        try:
            return await call_next(request)
        except Exception:  # noqa: BLE001 - never a traceback in a response
            log.exception("error answering %s", request.url.path)
            return ApiError(500, "internal error (the server's log has the details)",
                            code="internal_error", kind="server_error").response()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.get("/health")
    async def health():
        if state.ready:
            return {"status": "ok"}
        status = await state.status()
        reason = state.failed or f"no worker has its model loaded yet ({status['state']})"
        return JSONResponse({"status": status["state"], "reason": reason}, status_code=503)

    @app.get("/v1/status")
    async def status():
        return await state.status()

    @app.get("/metrics")
    async def metrics():
        await state.status()  # brings the worker and block gauges up to date
        return PlainTextResponse(generate_latest(state.metrics.registry),
                                 media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": model_list(state.workflow)}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request, state.max_body)
        return await complete(state, request, body)

    return app


def model_list(wf) -> list[dict[str, Any]]:
    """Every agent as a model id, and ``auto`` for the routed multi-agent answer."""
    site_model = (wf.site_model or {}).get("override") or (wf.site_model or {}).get("model")
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "hpc_chat",
             "hpc_chat": {"runs": agent.config.config.model if agent.config.config.model
                          != "default" else (site_model or "default"),
                          "description": agent.config.description}}
            for name, agent in sorted(wf.agents.items())]
    data.append({"id": ROUTED_MODEL, "object": "model", "created": 0, "owned_by": "hpc_chat",
                 "hpc_chat": {"runs": "routed to the agents by keywords, answers aggregated",
                              "description": "the multi-agent answer of 'hpc-chat ask'"}})
    return data


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > limit:
        raise ApiError(413, f"the request body is over {limit} bytes", code="request_too_large")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not JSON: {str(exc)[:200]}",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_request")
    return body


async def complete(state: ServerState, request: Request, body: dict[str, Any]):
    wf = state.workflow
    try:
        req = parse_request({"custom_id": "http", "url": CHAT_URL, "body": body})
    except RequestError as exc:  # named as the HTTP body names them: "temperature"
        raise ApiError(400, str(exc).replace("body.", ""), code=exc.code,
                       param=(exc.param or "").removeprefix("body.") or None) from None
    if req.agents and req.agents[0] not in wf.agents:
        known = ", ".join([*sorted(wf.agents), ROUTED_MODEL])
        raise ApiError(404, f"the model {req.model!r} does not exist; the models are: {known}",
                       code="model_not_found", param="model")
    if not state.ready:
        status = await state.status()
        raise ApiError(503, state.failed or f"no worker has its model loaded yet "
                       f"({status['state']}); wait for GET /health to answer 200",
                       code="model_not_ready", kind="server_error",
                       headers={"Retry-After": "5"})
    if state.in_flight >= state.max_queue:
        raise ApiError(429, f"{state.in_flight} requests are being answered (the bound is "
                            f"{state.max_queue}); retry later", code="queue_full",
                       kind="rate_limit_error", headers={"Retry-After": "2"})
    conversation = request.headers.get("x-conversation-id") or body.get("user")
    conversation = conversation if isinstance(conversation, str) and conversation else None
    kwargs = dict(agents=req.agents, options=req.options, history=req.history,
                  system_prompt=req.system, conversation_id=conversation)
    log.debug("chat completion for %s: %r", req.model, req.prompt)
    if body.get("stream") is True:
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        return StreamingResponse(stream_events(state, req.model, req.prompt, kwargs, usage),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    start = time.perf_counter()
    state.begin()
    result = None
    try:
        result = await wf.submit_request(req.prompt, **kwargs)
    finally:
        state.end(_status(result), result, time.perf_counter() - start)
    if not result["ok"]:
        raise failure(result)
    return completion_object(req.model, result)


def _status(result: dict | None) -> str:
    if result is None:
        return "cancelled"
    return "ok" if result["ok"] else ("bad_request" if result.get("error_kind") == "input"
                                      else "error")


def failure(result: dict[str, Any]) -> ApiError:
    error = result.get("error") or "the request failed"
    if "context window" in error:
        return ApiError(400, error, code="context_length_exceeded", param="messages")
    if result.get("error_kind") == "input":
        return ApiError(400, error, code="invalid_request")
    return ApiError(500, error, code="generation_failed", kind="server_error")


def _ids() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


def completion_object(model: str, result: dict[str, Any]) -> dict[str, Any]:
    ident, created = _ids()
    prompt, completion = result["prompt_tokens"], result["completion_tokens"]
    return {"id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": result["response"],
                                                 "refusal": None},
                         "logprobs": None, "finish_reason": result["finish_reason"] or "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
            "system_fingerprint": f"hpc_chat-{_version()}"}


def _version() -> str:
    from hpc_chat import __version__

    return __version__


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream_events(state: ServerState, model: str, prompt: str, kwargs: dict[str, Any],
                        usage: bool):
    """OpenAI's chat.completion.chunk events: the role, the text as the worker sends it, the
    finish reason, the usage (when asked), ``[DONE]``."""
    wf = state.workflow
    ident, created = _ids()

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        return _event({"id": ident, "object": "chat.completion.chunk", "created": created,
                       "model": model, "system_fingerprint": f"hpc_chat-{_version()}",
                       "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                    "finish_reason": finish}], **extra})

    stream, spec = state.hub.open()
    start = time.perf_counter()
    state.begin()
    result, sent = None, ""
    try:
        task = wf.submit_request(prompt, **kwargs, stream=spec)
        yield chunk({"role": "assistant", "content": ""})
        first = True
        while True:
            piece_wait = asyncio.ensure_future(stream.queue.get())
            done, _ = await asyncio.wait({piece_wait, task},
                                         return_when=asyncio.FIRST_COMPLETED)
            if piece_wait not in done:
                piece_wait.cancel()
                break
            piece = piece_wait.result()
            if piece is None:
                break
            if first:
                state.metrics.first_token.observe(time.perf_counter() - start)
                first = False
            sent += piece
            yield chunk({"content": piece})
        result = await task
        if not result["ok"]:
            err = failure(result)
            yield _event(error_body(str(err), err.kind, err.code, err.param))
        else:
            text = result["response"] or ""
            if text.startswith(sent) and len(text) > len(sent):
                yield chunk({"content": text[len(sent):]})  # not streamed (cache, routing)
            yield chunk({}, result["finish_reason"] or "stop")
            if usage:
                p, c = result["prompt_tokens"], result["completion_tokens"]
                yield _event({"id": ident, "object": "chat.completion.chunk",
                              "created": created, "model": model, "choices": [],
                              "usage": {"prompt_tokens": p, "completion_tokens": c,
                                        "total_tokens": p + c}})
        yield "data: [DONE]\n\n"
    finally:  # also when the client went away: its worker stops at the next token
        state.hub.close(stream)
        state.end(_status(result), result, time.perf_counter() - start)
