"""The HTTP routes: OpenAI's chat completions, responses (:mod:`hpc_chat.server.responses`),
text completions (:mod:`hpc_chat.server.completions`),
embeddings (:mod:`hpc_chat.server.embeddings`), files and batches
(:mod:`hpc_chat.server.batch_api`) and models, plus health, status and metrics, the stored
conversations (:mod:`hpc_chat.server.conversations`) and the browser's pages and login
(:mod:`hpc_chat.server.web`, :mod:`hpc_chat.server.web_login`).

A chat completion request is checked by the same code as an OpenAI batch line
(:func:`hpc_chat.openai.batch.parse_request`), so both accept and refuse the same things, then
answered by the workflow like any other request: routed (model ``auto``) or by the named
agent, decoded in the workers' batches. ``stream: true`` sends OpenAI's chunks over
server-sent events as the worker generates them (:mod:`hpc_chat.driver.token_hub`); a client that
disconnects stops its answer at the next token. Errors have OpenAI's shape and status.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from hpc_chat.driver.token_hub import RESTART
from hpc_chat.openai import chat as openai_chat
from hpc_chat.openai.batch import ROUTED_MODEL
from hpc_chat.protocol.result import FinishReason, provenance_of
from hpc_chat.server.agent_streams import AGENTS_HEADER, agent_pieces
from hpc_chat.server.auth import authorized
from hpc_chat.server.batch_api import add_batch_routes
from hpc_chat.server.chat import Started, close, ending, pieces, start_chat
from hpc_chat.server.completions import create_completion
from hpc_chat.server.conversations import add_conversation_routes
from hpc_chat.server.embeddings import embeddings
from hpc_chat.server.errors import ApiError
from hpc_chat.server.responses import create_response, get_response
from hpc_chat.server.state import ServerState
from hpc_chat.server.web import OPEN_PATHS, add_web_routes
from hpc_chat.server.web_login import cookie_may

log = logging.getLogger(__name__)

OPEN_ROUTES = {"/health"}


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="hpc_chat", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state

    @app.middleware("http")
    async def guard(request: Request, call_next):
        refused = who_may(state, request)
        if refused is not None:
            return refused.response(state.metrics)
        size = request.headers.get("content-length")
        if request.scope["path"] == "/v1/files" and request.method == "POST":
            size = None  # an upload has a limit of its own (server/uploads.py)
        if size is not None and size.isdigit() and int(size) > state.max_body:
            return ApiError(413, f"the request body is over {state.max_body} bytes",
                            code="request_too_large").response(state.metrics)
        try:
            return await call_next(request)
        except Exception:  # noqa: BLE001 - never a traceback in a response
            log.exception("error answering %s", request.url.path)
            return ApiError(500, "internal error (the server's log has the details)",
                            code="internal_error", kind="server_error").response()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return exc.response(state.metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                        code=code).response(state.metrics)

    @app.get("/health")
    async def health():
        """Open to all: the stage only (the details are in /v1/status, behind the key)."""
        if state.ready:
            return {"status": "ok"}
        stage = (await state.status())["state"]
        return JSONResponse({"status": stage, "reason": f"no worker has its model loaded yet "
                                                        f"({stage})"}, status_code=503)

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

    @app.post("/v1/embeddings")
    async def create_embeddings(request: Request):
        return await embeddings(state, await read_json(request, state.max_body))

    @app.post("/v1/completions")
    async def create_completion_route(request: Request):
        return await create_completion(state, await read_json(request, state.max_body),
                                       _fingerprint())

    @app.post("/v1/responses")
    async def create_response_route(request: Request):
        return await create_response(state, await read_json(request, state.max_body))

    @app.get("/v1/responses/{ident}")
    async def get_response_route(ident: str):
        return await get_response(state, ident)

    add_batch_routes(app, state)
    add_conversation_routes(app, state)
    add_web_routes(app, state.login)
    return app


def who_may(state: ServerState, request: Request) -> ApiError | None:
    """None when the request may go on: an open route (health, the pages and their assets,
    the login), the API key, or a browser's session cookie (a change also needs the page's
    header: :func:`hpc_chat.server.web_login.cookie_may`)."""
    path = request.scope["path"]
    if path in OPEN_ROUTES or path in OPEN_PATHS:
        return None
    if authorized(request.headers.get("authorization"), state.key):
        return None
    if state.login.valid(state.login.session_of(request.cookies)):
        if cookie_may(request.method, request.headers):
            return None
        return ApiError(403, "a change from a browser comes from this server's own page (the "
                             "X-HPC-Chat header)", code="forbidden")
    return ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY' (the key "
                         "is in $HPC_CHAT_API_KEY or the file hpc-chat serve named), or log in "
                         "with the link in $HPC_CHAT_HOME/server/login-url",
                    code="invalid_api_key")


def model_list(wf) -> list[dict[str, Any]]:
    """Every agent as a model id, and ``auto`` for the routed multi-agent answer; what each
    can do: every agent's model chats, completes text and embeds, ``auto`` only chats."""
    from hpc_chat.worker.chat import model_name

    data = [{"id": name, "object": "model", "created": 0, "owned_by": "hpc_chat",
             "hpc_chat": {"runs": model_name(agent.config.config.model_dump(),
                                             wf.site_model),
                          "description": agent.config.description,
                          "capabilities": ["chat", "completions", "embeddings"]}}
            for name, agent in sorted(wf.agents.items())]
    data.append({"id": ROUTED_MODEL, "object": "model", "created": 0, "owned_by": "hpc_chat",
                 "hpc_chat": {"runs": "routed to the agents by keywords, answers aggregated",
                              "description": "the multi-agent answer of 'hpc-chat ask'",
                              "capabilities": ["chat"]}})
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
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", code="invalid_request",
                       param="stream_options")
    # Only our header names a stored conversation. OpenAI's `user` is the end user's id (a
    # front end serving several people sends one per person): taking it as a conversation
    # would splice their sessions, and let one read another's turns.
    conversation = request.headers.get("x-conversation-id")
    if conversation is not None and not 0 < len(conversation) <= MAX_CONVERSATION:
        raise ApiError(400, f"X-Conversation-Id must be 1 to {MAX_CONVERSATION} characters",
                       code="invalid_request", param="X-Conversation-Id")
    started = await start_chat(state, body, conversation=conversation,
                               stored=conversation is not None,
                               each_agent=request.headers.get(AGENTS_HEADER) == "stream")
    if body.get("stream") is not True:
        return completion_object(started.req.model, started.task.result())
    usage = bool(options and options.get("include_usage") is True)
    return StreamingResponse(stream_events(state, started, usage),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


MAX_CONVERSATION = 256


def completion_object(model: str, result: dict[str, Any]) -> dict[str, Any]:
    return openai_chat.chat_completion(model, result, time.time(), provenance_of(result),
                                       fingerprint=_fingerprint())


def _fingerprint() -> str:
    from hpc_chat import __version__

    return f"hpc_chat-{__version__}"


def each_agent(result: dict[str, Any]) -> dict[str, Any]:
    """A routed answer from several agents: each one's own text (``hpc_chat_answers``), so a
    page can show them side by side (the content has them joined under headers)."""
    responses = result.get("responses") or []
    if len(responses) < 2:
        return {}
    return {"hpc_chat_answers": [{"agent": r.get("agent"), "content": r.get("content"),
                                  "error": r.get("error")} for r in responses]}


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream_events(state: ServerState, started: Started, usage: bool):
    """OpenAI's chat.completion.chunk events: the role, the text as the worker sends it, the
    finish reason, the usage (when asked), ``[DONE]``.

    The finish chunk carries the provenance in ``hpc_chat``, as a whole completion does.
    The final result is what counts: text that did not stream (a cache hit, several routed
    agents, a retried task) is sent from it at the end; if the streamed text is not the start
    of the final answer (a retry decoded another way), an error event says so."""
    ident, created, fingerprint = openai_chat.completion_id(), int(time.time()), _fingerprint()
    model = started.req.model

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        return _event(openai_chat.chunk(ident, created, model, fingerprint, delta, finish,
                                        **extra))

    sent = ""
    try:
        yield chunk({"role": "assistant", "content": ""})
        if started.agents:  # each routed agent's text, as an extension beside the content
            first = True
            async for agent, piece in agent_pieces(started.agents, started.task):
                if first:
                    state.metrics.first_token.observe(time.perf_counter() - started.start)
                    first = False
                yield chunk({}, hpc_chat_agent={"agent": agent, "restart": True}
                            if piece is RESTART else {"agent": agent, "content": piece})
        async for piece in pieces(state, started):
            sent += piece
            yield chunk({"content": piece})
        end = await ending(started, sent)
        result = end.result
        if end.error is not None:
            yield _event(end.error.body())
        elif (calls := openai_chat.message(result, prov := provenance_of(result))[0]
              .get("tool_calls")):
            yield chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]},
                        FinishReason.TOOL_CALLS.value, hpc_chat=prov)
            if usage:
                yield _event(openai_chat.usage_chunk(ident, created, model, result))
        else:
            if end.rest:
                yield chunk({"content": end.rest})
            # Who answered and how (an extension field, as on a whole completion): clients
            # that do not know it ignore it; `hpc-chat chat` names the agents from it. The
            # tokens' logprobs, when asked, come whole with it (the text streams as pieces
            # that are not token by token).
            yield chunk({}, result["finish_reason"] or FinishReason.STOP.value,
                        logprobs=openai_chat.logprobs_of(result), hpc_chat=prov,
                        **each_agent(result))
            if usage:
                yield _event(openai_chat.usage_chunk(ident, created, model, result))
        yield "data: [DONE]\n\n"
    finally:  # also when the client went away: its worker stops at the next token
        close(state, started)
