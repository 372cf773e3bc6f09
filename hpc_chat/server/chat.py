"""Running one chat request for an HTTP route: checked, admitted, submitted to the workflow,
and (streamed) its first piece awaited, so an early failure still gets its own HTTP status.

Both ``/v1/chat/completions`` (:mod:`hpc_chat.server.app`) and ``/v1/responses``
(:mod:`hpc_chat.server.responses`) start their answers here and only present them their own
way. The body is checked by the same code as an OpenAI batch line
(:func:`hpc_chat.openai.batch.parse_request`), so all of them accept and refuse the same things.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from hpc_chat.driver.token_hub import RESTART, Stream
from hpc_chat.openai.batch import CHAT_URL, ROUTED_MODEL, ChatRequest, RequestError, parse_request
from hpc_chat.protocol.failure import status_of
from hpc_chat.server.agent_streams import open_streams
from hpc_chat.server.errors import ApiError, admit
from hpc_chat.server.state import ServerState

log = logging.getLogger(__name__)


@dataclass
class Started:
    """A request on its way: its task resolves to the workflow's result dict. Streamed, its
    ``channel`` holds the text as it grows and ``first`` its first piece (None when the answer
    comes whole: a cache hit, several agents, a tool call); not streamed, the task is done."""

    req: ChatRequest
    task: asyncio.Task
    channel: Stream | None
    first: str | None
    start: float
    agents: dict[str, Stream] | None = None  # each routed agent's (server/agent_streams.py)


async def start_chat(state: ServerState, body: dict[str, Any], *,
                     conversation: str | None = None, stored: bool = False,
                     options: dict[str, Any] | None = None,
                     each_agent: bool = False) -> Started:
    """Check ``body`` (a chat completion's), start its answer and, streamed, wait for its first
    piece; a failure known by then is raised as an :class:`ApiError`. ``conversation`` with
    ``stored`` goes on from that conversation's stored turns (``X-Conversation-Id``);
    ``options`` are the route's own (a text completion's); ``each_agent``: a routed answer's
    agents are streamed side by side (:mod:`hpc_chat.server.agent_streams`)."""
    wf = state.workflow
    try:
        req = parse_request({"custom_id": "http", "url": CHAT_URL, "body": body})
    except RequestError as exc:  # named as the HTTP body names them: "temperature"
        raise ApiError(400, str(exc).replace("body.", ""), code=exc.code,
                       param=(exc.param or "").removeprefix("body.") or None) from None
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", code="invalid_request",
                       param="stream")
    if req.agents and req.agents[0] not in wf.agents:
        known = ", ".join([*sorted(wf.agents), ROUTED_MODEL])
        raise ApiError(404, f"the model {req.model!r} does not exist; the models are: {known}",
                       code="model_not_found", param="model")
    await admit(state)
    log.debug("chat completion for %s: %r", req.model, req.prompt)
    opts = {**req.options, **(options or {})}
    # Every request gets a stream when workers can reach the server: the text as it grows
    # when the client streams, else only the result, which the worker sends as soon as it is
    # done (not when the last answer of its micro-batch is: hpc_chat.driver.executors.grouping).
    # A tool call is sent whole, as OpenAI's tool_calls delta, once it is made: its text is
    # not streamed as content.
    calls = bool(opts.get("tools")) and opts.get("tool_choice") != "none"
    each = open_streams(state, req, opts) if stream and each_agent and not calls and \
        state.hub is not None else None
    channel, spec = state.hub.open(tokens=stream and not calls) \
        if state.hub is not None and each is None else (None, None)
    if stream and (channel is not None or each) and "seed" not in opts:
        # Drawn here, so a retried task (a lost worker) writes the same text again.
        opts["seed"] = random.getrandbits(31)
    start = time.perf_counter()
    state.begin()
    # One message and a stored conversation: it goes on from its stored turns (as `hpc-chat
    # chat --conversation`); otherwise the request's messages are the whole of it.
    stored = stored and not req.history and req.system is None
    task = wf.submit_request(req.prompt, agents=req.agents, options=opts,
                             history=None if stored else req.history,
                             system_prompt=req.system, conversation_id=conversation,
                             stream=spec,
                             streams={a: s for a, (_, s) in each.items()} if each else None)
    task.add_done_callback(lambda t: state.end(_status(t), _result_of(t),
                                               time.perf_counter() - start))
    if each:  # the agents' pieces go out as they come; a failure as the stream's error
        return Started(req, task, None, None, start, {a: c for a, (c, _) in each.items()})
    if not stream:
        try:
            result = await task
        finally:
            if channel is not None:
                state.hub.close(channel)
        if not result["ok"]:
            raise failure(result)
        return Started(req, task, None, None, start)
    try:  # the status line waits for the first piece: an early failure gets its own status
        first = await _first_event(channel, task)
    except BaseException:
        task.cancel()
        if channel is not None:
            state.hub.close(channel)
        raise
    if first is None:  # nothing streamed: the answer comes whole, as without streaming
        await asyncio.wait({task})
    if first is None and not task.result()["ok"]:
        if channel is not None:
            state.hub.close(channel)
        raise failure(task.result())
    return Started(req, task, channel, first, start)


async def pieces(state: ServerState, started: Started):
    """The streamed text's pieces after the first, as the worker sends them (none after a
    :data:`~hpc_chat.driver.token_hub.RESTART`: the final result then has the answer). The
    first piece's time is the time-to-first-token metric."""
    piece = started.first
    if piece is not None:
        state.metrics.first_token.observe(time.perf_counter() - started.start)
    while piece is not None and piece is not RESTART:
        yield piece
        piece = await _next(started.channel, started.task)


def close(state: ServerState, started: Started) -> None:
    """Also when the client went away: its worker stops at the next token."""
    for channel in [started.channel, *(started.agents or {}).values()]:
        if channel is not None:
            state.hub.close(channel)
    if not started.task.done():
        started.task.cancel()


def _status(task: asyncio.Task) -> str:
    """For the metrics, from the done-callback: never raises (a raise there would keep the
    request counted as in flight for good)."""
    if task.cancelled():
        return "cancelled"
    if task.exception() is not None:
        return "error"
    result = task.result()
    if result["ok"]:
        return "ok" if result.get("finish_reason") != "cancelled" else "cancelled"
    return "bad_request" if result.get("error_kind") == "input" else "error"


def _result_of(task: asyncio.Task) -> dict | None:
    return None if task.cancelled() or task.exception() is not None else task.result()


async def _first_event(channel: Stream | None, task: asyncio.Task):
    """The first streamed piece, or None when the answer ended first (or is not streamed)."""
    if channel is None:
        await asyncio.wait({task})
        return None
    while True:
        piece = await _next(channel, task)
        if piece is not RESTART:
            return piece


async def _next(channel: Stream, task: asyncio.Task):
    """The next piece, :data:`RESTART`, or None when the stream (or the task) ended."""
    getter = asyncio.ensure_future(channel.queue.get())
    try:
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter in done:
        return getter.result()
    return None


def failure(result: dict[str, Any]) -> ApiError:
    """The same status and code as the failure's OpenAI batch error entry."""
    status, code, param = status_of(result)
    return ApiError(status, result.get("error") or "the request failed", code=code,
                    param=(param or "").removeprefix("body.") or None,
                    kind="server_error" if status >= 500 else "invalid_request_error")


STREAM_MISMATCH = ("the answer was computed again after a worker failure and differs from the "
                   "text streamed so far; ask again")


@dataclass
class Ending:
    """How a streamed answer ends, for every route's stream: its ``result``, the text of it
    not streamed yet (``rest``), or the ``error`` to send instead: the answer failed, or the
    streamed text is not the start of the final one (a retried task decoded another way)."""

    result: dict[str, Any]
    rest: str = ""
    error: ApiError | None = None


async def ending(started: Started, sent: str) -> Ending:
    """The end of ``started``'s answer once ``sent`` has been streamed. The final result is
    what counts: text that did not stream (a cache hit, several routed agents, a retried
    task) is sent from it."""
    result = await started.task
    if not result["ok"]:
        return Ending(result, error=failure(result))
    text = result["response"] or ""
    if text.startswith(sent):
        return Ending(result, text[len(sent):])
    if sent.rstrip() == text:
        return Ending(result)
    log.warning("streamed text is not the start of the final answer")
    return Ending(result, error=ApiError(500, STREAM_MISMATCH, code="stream_mismatch",
                                         kind="server_error"))
