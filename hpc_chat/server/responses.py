"""``POST /v1/responses`` and ``GET /v1/responses/{id}``: OpenAI's Responses API over the same
chat path as ``/v1/chat/completions`` (:mod:`hpc_chat.server.chat`).

State lives in the history database the workflow already keeps (``$HPC_CHAT_HOME/history.db``,
0600): each stored response keeps its object and its own turns
(:meth:`hpc_chat.driver.history.MemoryHistory.save_response`), and ``previous_response_id``
rebuilds the conversation by following the chain back (:func:`earlier_turns`), so branches
from one response do not disturb each other. ``store: false`` keeps nothing (then neither
``GET`` nor ``previous_response_id`` can find it). A workflow without a history unit keeps no
responses: its answers say ``store: false``.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from fastapi.responses import StreamingResponse

from hpc_chat.errors import HistoryError
from hpc_chat.openai import responses as shapes
from hpc_chat.openai.params import RequestError
from hpc_chat.protocol.result import provenance_of
from hpc_chat.server.chat import Started, close, ending, pieces, start_chat
from hpc_chat.server.errors import ApiError
from hpc_chat.server.state import ServerState

MAX_ID = 256
MAX_CHAIN = 1000  # responses followed back from one previous_response_id


async def create_response(state: ServerState, body: dict[str, Any]):
    store = body.get("store", True)
    if not isinstance(store, bool):
        raise ApiError(400, "store must be true or false", code="invalid_request", param="store")
    if not isinstance(body.get("metadata", {}), dict | None):
        raise ApiError(400, "metadata must be an object", code="invalid_request",
                       param="metadata")
    history = state.workflow.history
    keep = store and history is not None
    previous = body.get("previous_response_id")
    earlier = [] if previous is None else await earlier_turns(state, previous)
    try:
        chat, new = shapes.chat_body(body, earlier)
    except RequestError as exc:
        raise ApiError(400, str(exc), code=exc.code, param=exc.param) from None
    started = await start_chat(state, chat)
    ident, created = shapes.new_id(), time.time()
    body = {**body, "store": keep}
    if body.get("stream") is not True:
        result = started.task.result()
        obj = shapes.response_object(ident, body, created, result=result,
                                     provenance=provenance_of(result))
        if keep:
            await _save(history, ident, obj, shapes.turns(new, result))
        return obj
    return StreamingResponse(events(state, started, ident, body, created, new if keep else None),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def get_response(state: ServerState, ident: str) -> dict[str, Any]:
    return (await _record(state, ident, param=None))["response"]


async def earlier_turns(state: ServerState, previous: Any) -> list[dict[str, str]]:
    """The turns of every response from the first of the chain to ``previous``."""
    if not isinstance(previous, str) or not previous:
        raise ApiError(400, "previous_response_id must be a response's id",
                       code="invalid_request", param="previous_response_id")
    chain: list[list[dict[str, str]]] = []
    ident: str | None = previous
    while ident is not None:
        if len(chain) == MAX_CHAIN:
            raise ApiError(400, f"the conversation of {previous!r} is over {MAX_CHAIN} "
                                f"responses long; start a new one (send the turns you need "
                                f"as input)", code="invalid_request",
                           param="previous_response_id")
        record = await _record(state, ident, param="previous_response_id")
        chain.append(record["turns"])
        ident = record["response"].get("previous_response_id")
    return [turn for turns in reversed(chain) for turn in turns]


async def _record(state: ServerState, ident: str, *, param: str | None) -> dict[str, Any]:
    history = state.workflow.history
    found = None
    if history is not None and 0 < len(ident) <= MAX_ID:
        try:
            found = await history.response(ident)
        except HistoryError as exc:
            raise ApiError(500, str(exc), code="history_unavailable",
                           kind="server_error") from None
    if found is None:
        raise ApiError(404, f"no stored response has the id {ident[:MAX_ID]!r} (a response "
                            f"made with store: false is not kept)", code="response_not_found",
                       param=param)
    return found


async def _save(history, ident: str, obj: dict[str, Any], turns: list[dict[str, str]]) -> None:
    """Keep the response and its own turns; its provenance without the messages decoded
    (the whole conversation in every response of a chain would grow as its square)."""
    prov = obj.get("hpc_chat") or {}
    agents = [{k: v for k, v in a.items() if k != "messages"} for a in prov.get("agents", [])]
    kept = {**obj, "hpc_chat": {**prov, "agents": agents} if prov else None}
    try:
        await history.save_response(ident, {"response": kept, "turns": turns})
    except HistoryError as exc:
        raise ApiError(500, f"the answer could not be stored: {exc}",
                       code="history_unavailable", kind="server_error") from None


async def events(state: ServerState, started: Started, ident: str, body: dict[str, Any],
                 created: float, new: list[dict[str, str]] | None):
    """The Responses stream: created, in progress, the message item and its text part added,
    the text's deltas as the worker sends them, then the text, part and item done and
    ``response.completed`` (``response.incomplete`` when cut at ``max_output_tokens``, or
    ``response.failed``). The response is stored (``new`` is its input, None: not kept)
    before the event that completes it, so a client can continue from it at once."""
    number = itertools.count()
    history = state.workflow.history
    item = shapes.message_item(ident, "", "in_progress")
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}

    def event(kind: str, **fields) -> str:
        return shapes.event(kind, next(number), **fields)

    try:
        start = shapes.response_object(ident, body, created, status="in_progress")
        yield event("response.created", response=start)
        yield event("response.in_progress", response=start)
        yield event("response.output_item.added", output_index=0, item=item)
        yield event("response.content_part.added", part=shapes.output_text(""), **where)
        sent = ""
        async for piece in pieces(state, started):
            sent += piece
            yield event("response.output_text.delta", delta=piece, logprobs=[], **where)
        end = await ending(started, sent)
        result, err = end.result, end.error
        if err is not None and not result["ok"]:
            yield event("response.failed", response=shapes.response_object(
                ident, body, created, status="failed",
                error={"code": err.code, "message": str(err)}))
            return
        if err is not None:  # the streamed text is not the start of the answer
            yield event("error", code=err.code, message=str(err), param=None)
            return
        text = result["response"] or ""
        if end.rest:
            yield event("response.output_text.delta", delta=end.rest, logprobs=[], **where)
        yield event("response.output_text.done", text=text, logprobs=[], **where)
        yield event("response.content_part.done", part=shapes.output_text(text), **where)
        final = shapes.response_object(ident, body, created, result=result,
                                       provenance=provenance_of(result))
        yield event("response.output_item.done", output_index=0, item=final["output"][0])
        if new is not None:
            try:
                await _save(history, ident, final, shapes.turns(new, result))
            except ApiError as exc:
                yield event("error", code=exc.code, message=str(exc), param=None)
                return
        kind = "response.incomplete" if final["status"] == "incomplete" else \
            "response.completed"
        yield event(kind, response=final)
    finally:
        close(state, started)
