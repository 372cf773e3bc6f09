"""Answers shown as they are generated: one live panel per answering agent.

The driver opens a token hub (:mod:`hpc_chat.driver.token_hub`) and one stream per routed agent;
the workers (through the node engine) send each answer's text as it grows, and the panels
follow it. Agents that collaborate (``synthesize``, ``review``) get one panel: the reply as it
is written (the earlier rounds are in ``--json``). The result still comes back through Parsl
and is printed as always once the request ends (the live panels are transient), so a pipe,
``--raw`` and ``--json`` get exactly what they got before. Globus Compute workers cannot
reach the driver: no live panels there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from hpc_chat.agents.modes import collaborating
from hpc_chat.driver.result_streams import stream_addresses
from hpc_chat.driver.token_hub import RESTART, TokenHub
from hpc_chat.errors import HpcChatError

REFRESH_PER_S = 12


async def answer_live(workflow, question: str, console, **request) -> dict[str, Any]:
    """``workflow.process_request(question, **request)``, with live panels on ``console``."""
    where = stream_addresses(workflow)
    options = request.get("options") or {}
    together = collaborating(workflow.loaded.settings.collaboration, options.get("mode"))
    try:
        # (a format: one answer, one panel; collaborating agents: the reply's panel)
        panels_of = ["reply"] if together else \
            [r.agent for r in workflow.choose_agents(question, request.get("agents"), options)]
    except HpcChatError:
        panels_of = None  # the request reports it
    if where is None or not panels_of:
        return await workflow.process_request(question, **request)
    hub = TokenHub()
    await hub.start(*where)
    try:
        opened = {name: hub.open() for name in panels_of}
        texts = {name: "" for name in opened}
        task = workflow.submit_request(question, **request, **(
            {"stream": opened[panels_of[0]][1]} if together else
            {"streams": {a: spec for a, (_, spec) in opened.items()}}))

        def panels():
            return Group(*(Panel(Text(texts[a] or "…"), title=Text(a), title_align="left")
                           for a in texts))

        changes = [0]

        async def follow(agent, stream):
            while True:
                piece = await stream.queue.get()
                if piece is None:
                    return
                texts[agent] = "" if piece is RESTART else texts[agent] + piece
                changes[0] += 1

        followers = [asyncio.ensure_future(follow(a, s)) for a, (s, _) in opened.items()]
        try:
            with Live(panels(), console=console, transient=True, auto_refresh=False) as live:
                drawn = 0
                while not task.done():
                    await asyncio.wait([task], timeout=1 / REFRESH_PER_S)
                    if changes[0] != drawn:  # redraw only what changed (a slow ssh link)
                        drawn = changes[0]
                        live.update(panels(), refresh=True)
        finally:  # also when the user cancels the answer (Ctrl-C in chat)
            task.cancel()
            for f in followers:
                f.cancel()
        return task.result()
    finally:
        await hub.stop()
