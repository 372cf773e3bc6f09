"""One agent's answer to one message: from the cache, a Parsl (or Globus Compute) worker, or a
remote model called by the driver. Never raises for a failed answer: the dict then has
``error`` with its code, as every caller (routing, the collaboration rounds) reads it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hpc_chat.agents.cache import cache_key
from hpc_chat.driver.result import describe_error
from hpc_chat.protocol.context import TaskContext
from hpc_chat.protocol.failure import code_of, failure_code, failure_fields
from hpc_chat.worker.chat import build_messages, decoded_messages


async def ask_agent(wf, name: str, text: str, history: list[dict[str, Any]],
                    context: TaskContext, *, request_key: str | None = None,
                    score: float = 1.0, matched: tuple[str, ...] = ()) -> dict[str, Any]:
    """Agent ``name`` of workflow ``wf`` answers ``text`` after ``history``, under
    ``context`` (its options, site model and stream). ``request_key`` with the agent names
    the task for a Globus Compute batch's ``--resume``."""
    options = context.options
    agent = wf.agents[name].config
    perf = agent.config.performance
    messages = build_messages(context.system_prompt or agent.config.system_prompt, text,
                              history, options.get("tool_result"))
    agent_dict = agent.to_dict()  # once: a corpus-sized batch pays for each model_dump
    key = None
    if perf.enable_caching:
        key = cache_key(agent_dict, messages, options.get("seed"),
                        {"site": wf.site_model.model_dump(), "options": options})
        hit = wf.cache.get(key, perf.cache_ttl)
        if hit is not None:
            return {**hit, "cached": True, "routing_score": score}
    remote = wf.remote_models.get(name)
    try:
        if remote is not None:
            result = await wf.remote.answer(
                remote, agent_dict, messages, options, len(history),
                context.stream.model_dump() if context.stream is not None else None)
        elif wf.batcher is not None:
            result = await wf.batcher.submit(agent_dict, text, context.model_dump(),
                                             perf.retry_attempts)
        else:
            # A tag names this agent's task of this request, so a Globus Compute batch can
            # be reattached on --resume; Parsl executors ignore it.
            tag = f"{request_key}\t{name}" if request_key is not None else None
            result = await wf.executor.submit(
                wf.executor.chat_function, agent_dict, text, context.model_dump(),
                time_limit=wf.loaded.settings.performance.timeout_seconds,
                retry_attempts=perf.retry_attempts, tag=tag)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return {"agent": name, "error": describe_error(exc),
                **failure_fields(failure_code(exc))}
    if result.get("error"):  # this item of a batch failed on its own
        return {"agent": name, "error": result["error"], **failure_fields(code_of(result))}
    if isinstance(result.get("provenance"), dict):  # the worker sent no messages back
        result = {**result, "provenance": {**result["provenance"], "messages":
                  decoded_messages(messages, result.get("history_turns_used", 0))}}
    if key is not None and result.get("finish_reason") != "cancelled":
        wf.cache.put(key, result)  # a stopped (partial) answer is never reused
    return {**result, "routing_score": score, "matched": list(matched)}
