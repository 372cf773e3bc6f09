"""A routed answer's agents streamed side by side, for a client that asks for it.

A chat completion to ``auto`` that the router sends to several agents is one OpenAI answer:
its content is the agents' answers joined, which exists only once they are all done, so a
plain client sees it arrive whole. A client that sends ``X-HPC-Chat-Agents: stream`` (the chat
page) gets, before that, each agent's text as its worker generates it: chunks whose
``choices[0].delta`` is empty and whose ``hpc_chat_agent`` says ``{"agent", "content"}`` (or
``{"agent", "restart": true}`` when a retried task starts that agent's text again). The answer
then ends as any streamed answer does: the joined content, and the finish chunk with each
agent's final text (``hpc_chat_answers``), which is what counts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hpc_chat.agents.modes import collaborating
from hpc_chat.driver.token_hub import Stream
from hpc_chat.errors import HpcChatError

AGENTS_HEADER = "x-hpc-chat-agents"


def open_streams(state, req, opts: dict[str, Any]) -> dict[str, tuple[Stream, dict]] | None:
    """A stream per routed agent, or None when one agent answers (the usual stream then) or
    the agents collaborate (the usual stream then carries the synthesis as it is written)."""
    if collaborating(state.workflow.loaded.settings.collaboration, opts.get("mode")):
        return None
    try:
        routes = state.workflow.choose_agents(req.prompt, req.agents, opts)
    except HpcChatError:
        return None  # the request itself reports it
    if len(routes) < 2:
        return None
    return {r.agent: state.hub.open() for r in routes}


async def agent_pieces(streams: dict[str, Stream], task: asyncio.Task):
    """``(agent, piece)`` as the pieces arrive (RESTART included), until every agent's stream
    has ended or the request is done (then what is already queued)."""
    live = dict(streams)
    getters: dict[str, asyncio.Future] = {}
    try:
        while live:
            for agent, stream in live.items():
                if agent not in getters:
                    getters[agent] = asyncio.ensure_future(stream.queue.get())
            done, _ = await asyncio.wait({*getters.values(), task},
                                         return_when=asyncio.FIRST_COMPLETED)
            for agent, getter in list(getters.items()):
                if getter.done():
                    del getters[agent]
                    piece = getter.result()
                    if piece is None:
                        live.pop(agent)
                    else:
                        yield agent, piece
            if task in done:
                for agent, stream in live.items():
                    while not stream.queue.empty():
                        piece = stream.queue.get_nowait()
                        if piece is not None:
                            yield agent, piece
                return
    finally:
        for getter in getters.values():
            getter.cancel()
