"""The rounds of a ``synthesize`` or ``review`` request (:mod:`hpc_chat.agents.modes`).

Each round's requests (every agent's) are submitted together, so the node engines decode them
in one continuous batch with whatever else is running: a batch file's prompts all in their
first round, then each prompt's next round as soon as its own round is done, never waiting
for the slowest prompt. A round is a plain ``gather`` of the agents' answers; the workflow's
batcher and the engines do the rest.

The result keeps every round: ``rounds`` (each answer's agent, text, finish and tokens, in
the order asked) and, in ``responses``, each answer whole with its ``round`` and ``step``,
whose provenance says how the reply was made. Usage is the sum over every round: what the
reply cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hpc_chat.agents.modes import (
    CollaborationSettings,
    Mode,
    review_prompt,
    synthesis_prompt,
    unchanged,
    vote,
)
from hpc_chat.agents.routing import Route, route
from hpc_chat.errors import HpcChatError
from hpc_chat.protocol.result import Usage
from hpc_chat.structured.compile import FORMAT_KEYS, output_format

# ask(agent, text, final): an agent's answer dict; ``final``: it is the reply (a synthesis),
# so the request's format and stream apply to it.
Ask = Callable[[str, str, bool], Awaitable[dict[str, Any]]]


def first_round(loaded, text: str, agents: list[str] | None, options: dict[str, Any],
                mode: Mode) -> list[Route]:
    """Who answers first: the request's agents, else the workflow's ``collaboration.agents``,
    else the router's choice (up to ``routing.max_agents``). A request's format is the
    reply's: it needs a synthesis to apply to, and tools (one answer calling a tool) are
    ``route``'s alone."""
    collab = loaded.settings.collaboration
    if options.get("tools"):
        raise HpcChatError(f"tools are answered by one agent: ask in mode route, not {mode.value}")
    if mode is Mode.REVIEW and collab.finish == "vote" and \
            output_format(**{k: options.get(k) for k in FORMAT_KEYS}) is not None:
        raise HpcChatError("a response_format or grammar applies to a synthesized reply; this "
                           "workflow's review ends in a vote (collaboration.finish)")
    names = agents or collab.agents
    if names:
        return [Route(a, 1.0, ()) for a in names]
    routes = route(text, loaded.agents, loaded.default_agent)
    cap = loaded.settings.routing.max_agents
    return routes[:cap] if cap else routes


def without_format(options: dict[str, Any]) -> dict[str, Any]:
    """The options of a round before the reply: its answers are free text, without the
    logprobs asked of the reply."""
    return {k: v for k, v in options.items() if k not in (*FORMAT_KEYS, "logprobs")}


async def collaborate(settings: CollaborationSettings, mode: Mode, question: str,
                      agents: list[str], aggregator: str, ask: Ask) -> dict[str, Any]:
    """Run ``mode`` over ``agents`` (the first round's, in order) and return the combined
    answer, as :func:`hpc_chat.agents.aggregate.aggregate_responses` does for ``route``. A
    prompt template that fails ends the request with its error, the rounds done kept."""
    rounds: list[dict[str, Any]] = []
    try:
        return await _rounds(settings, mode, question, agents, aggregator, ask, rounds)
    except HpcChatError as exc:
        combined = _combined(mode, rounds, None)
        combined["errors"].append({"agent": None, "error": str(exc)})  # the workflow's, not
        # an agent's: the message names the template's key
        return combined


async def _rounds(settings: CollaborationSettings, mode: Mode, question: str,
                  agents: list[str], aggregator: str, ask: Ask,
                  rounds: list[dict[str, Any]]) -> dict[str, Any]:

    async def round_of(step: str, asks: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
        answers = list(await asyncio.gather(*(ask(a, text, final) for a, text, final in asks)))
        rounds.append({"round": len(rounds), "step": step, "answers": answers})
        return [a for a in answers if not a.get("error")]

    # One agent: its answer is the reply (nothing to synthesize, no one else to review it)
    alone = len(agents) == 1
    current = await round_of("answer", [(a, question, alone) for a in agents])
    reply = None
    if len(current) > 1 and mode is Mode.REVIEW:
        for k in range(1, settings.rounds + 1):
            revised = await round_of("review", [
                (a["agent"], review_prompt(settings, question, a["agent"], current, k), False)
                for a in current])
            if not revised:
                break  # every reviewer failed: the last good round stands
            stop = settings.stop_when_unchanged and unchanged(current, revised)
            current = revised
            if stop or len(current) < 2:
                break
    if current and mode is Mode.REVIEW and settings.finish == "vote":
        reply = vote(current)
    if current and reply is None:
        if alone:
            reply = current[0]
        else:
            done = await round_of("synthesis", [
                (aggregator, synthesis_prompt(settings, question, current), True)])
            reply = done[0] if done else None
    return _combined(mode, rounds, reply)


def _combined(mode: Mode, rounds: list[dict[str, Any]],
              reply: dict[str, Any] | None) -> dict[str, Any]:
    everything = [{**a, "round": r["round"], "step": r["step"]}
                  for r in rounds for a in r["answers"]]
    good = [a for a in everything if not a.get("error")]
    failed = [a for a in everything if a.get("error")]
    agents = list(dict.fromkeys(a["agent"] for a in good))
    return {
        "content": reply["content"] if reply is not None else "",
        "ok": reply is not None,
        "agents": agents,
        "primary_agent": reply["agent"] if reply is not None else None,
        # the reply's own (an earlier round's answer cut at max_tokens does not cut the reply)
        "finish_reason": reply.get("finish_reason") if reply is not None else None,
        "usage": sum((Usage.of(a.get("usage") or {}) for a in good), Usage()).model_dump(),
        "cached": bool(good) and all(a.get("cached") for a in good),
        "responses": everything,
        "errors": [{"agent": a.get("agent"), "error": a["error"]} for a in failed],
        "mode": mode.value,
        "rounds": [{"round": r["round"], "step": r["step"],
                    "answers": [_brief(a) for a in r["answers"]]} for r in rounds],
    }


def _brief(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer as a round lists it (the whole of it is in ``responses``)."""
    if answer.get("error"):
        return {"agent": answer.get("agent"), "error": answer["error"]}
    return {"agent": answer["agent"], "content": answer["content"],
            "model": answer.get("model"), "finish_reason": answer.get("finish_reason"),
            "usage": answer.get("usage"), "cached": bool(answer.get("cached"))}
