"""The stored conversations, for the chat page (and any client): list, read, remove.

A chat completion with ``X-Conversation-Id: NAME`` stores its turns under NAME (the history
database ``hpc-chat chat --conversation`` uses too), and goes on from them when it sends one
new message. These routes let a client find those conversations again: ``GET
/v1/conversations`` (newest first, each with its first question as a title),
``GET /v1/conversations/{name}`` (the turns, each with the agent that wrote it) and
``DELETE /v1/conversations/{name}``. They are this server's own, not OpenAI's.
"""

from __future__ import annotations

from fastapi import FastAPI

from hpc_chat.server.errors import ApiError
from hpc_chat.server.state import ServerState

TITLE_CHARS = 80
LISTED = 200  # the newest; older ones stay in the database


def add_conversation_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/conversations")
    async def list_conversations():
        data = []
        for entry in await _history(state).titled(LISTED, TITLE_CHARS * 4):
            title = (entry["title"] or "").strip().splitlines()
            data.append({"id": entry["name"], "object": "conversation",
                         "title": title[0][:TITLE_CHARS] if title else entry["name"],
                         "messages": entry["messages"], "created_at": entry["created_at"],
                         "updated_at": entry["updated_at"]})
        return {"object": "list", "data": data}

    @app.get("/v1/conversations/{name:path}")
    async def read_conversation(name: str):
        messages = await _history(state).messages(name)
        if not messages:
            raise ApiError(404, f"no stored conversation {name!r}",
                           code="conversation_not_found")
        return {"id": name, "object": "conversation", "messages": messages}

    @app.delete("/v1/conversations/{name:path}")
    async def delete_conversation(name: str):
        if not await _history(state).remove(name):
            raise ApiError(404, f"no stored conversation {name!r}",
                           code="conversation_not_found")
        return {"id": name, "object": "conversation.deleted", "deleted": True}


def _history(state: ServerState):
    history = getattr(state.workflow, "history", None)
    if history is None:
        raise ApiError(503, "this server keeps no conversation history", code="no_history")
    return history
