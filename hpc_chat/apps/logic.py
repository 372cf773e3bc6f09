"""The chat logic that runs in workers: pure Python, no Parsl, plain data in and out.

``process_chat_message`` is what a Parsl worker, a Globus Compute endpoint or a plain loop calls.
Its arguments and result are JSON-compatible, so it can be shipped anywhere, and the model it
loads stays loaded in the process for the next call.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from pydantic import ValidationError

from hpc_chat.agents.cache import cache_key, process_cache
from hpc_chat.configfile import format_validation_error
from hpc_chat.core.agent import AgentConfig
from hpc_chat.errors import ConfigError, ModelNotFoundError
from hpc_chat.llm.engine import PromptTooLongError, get_engine
from hpc_chat.llm.models import ModelSpec, model_location

# Tokens kept free for the chat template's own markup around each message.
TEMPLATE_OVERHEAD_PER_MESSAGE = 8


def build_messages(system_prompt: str, message: str,
                   history: list[dict[str, str]] | None) -> list[dict[str, str]]:
    """System prompt, then the recent history turns, then the new user message."""
    msgs = [{"role": "system", "content": system_prompt}]
    for turn in history or []:
        if turn.get("role") in ("user", "assistant") and turn.get("content"):
            msgs.append({"role": turn["role"], "content": str(turn["content"])})
    msgs.append({"role": "user", "content": message})
    return msgs


def fit_to_context(messages: list[dict[str, str]], count_tokens, n_ctx: int,
                   max_tokens: int) -> list[dict[str, str]]:
    """Drop the oldest history turns until the prompt and ``max_tokens`` fit in ``n_ctx``.

    The system prompt and the new message are never dropped or cut: when they alone do not fit,
    the request fails with :class:`PromptTooLongError` (retrying would not help).
    """
    def size(msgs):
        return sum(count_tokens(m["content"]) + TEMPLATE_OVERHEAD_PER_MESSAGE for m in msgs)

    budget = n_ctx - max_tokens
    msgs = list(messages)
    while size(msgs) > budget and len(msgs) > 2:
        del msgs[1]
    if size(msgs) > budget:
        raise PromptTooLongError(
            f"the system prompt and message need about {size(msgs)} tokens, but the context "
            f"window of {n_ctx} tokens leaves {budget} after reserving max_tokens={max_tokens}; "
            f"shorten the prompt, lower max_tokens or raise n_ctx")
    return msgs


def model_name(settings: dict[str, Any], site_model: dict[str, Any]) -> str:
    """The model an agent runs: ``--model`` (``site_model["override"]``) over the agent's own
    ``model``, over the site's when the agent says ``default``."""
    name = site_model.get("override") or settings.get("model") or "default"
    if name == "default":  # the agent defers to the site's choice of model
        name = site_model.get("model") or "default"
    return name


def model_spec(settings: dict[str, Any], site_model: dict[str, Any]) -> ModelSpec:
    """Agent settings override the site's model defaults; the name is resolved on this host."""
    def pick(key, default):
        value = settings.get(key)
        return value if value is not None else site_model.get(key, default)

    path = model_location(model_name(settings, site_model), site_model.get("aliases"))
    return ModelSpec(path=path, n_ctx=pick("n_ctx", 2048), n_threads=pick("n_threads", None),
                     n_gpu_layers=pick("n_gpu_layers", 0), n_batch=site_model.get("n_batch", 512))


def _prepare(agent_config: dict, message: str, context: dict) -> dict[str, Any]:
    """Validate one request and work out everything that decides its answer."""
    try:
        agent = AgentConfig.model_validate(agent_config)
    except ValidationError as exc:
        name = agent_config.get("name", "?") if isinstance(agent_config, dict) else "?"
        raise ConfigError(format_validation_error(f"agent {name}", exc)) from None
    if not isinstance(message, str) or not message.strip():
        raise ValueError("the message is empty")
    settings = agent.config
    options = context.get("options") or {}
    site_model = context.get("model") or {}
    temperature = options.get("temperature")
    prep = {
        "agent": agent, "settings": settings, "started": time.time(),
        "seed": options.get("seed", settings.seed),
        "max_tokens": options.get("max_tokens") or settings.max_tokens,
        "temperature": settings.temperature if temperature is None else temperature,
        "messages": build_messages(settings.system_prompt, message, context.get("history")),
        "spec": model_spec(settings.model_dump(), site_model),
        "site_model": site_model,
    }
    prep["key"] = cache_key(agent.to_dict(), prep["messages"], prep["seed"],
                            {**prep["spec"].model_dump(), "max_tokens": prep["max_tokens"],
                             "temperature": prep["temperature"]})
    return prep


def _cached(prep: dict[str, Any]) -> dict | None:
    perf = prep["settings"].performance
    if not perf.enable_caching:
        return None
    hit = process_cache.get(prep["key"], perf.cache_ttl)
    if hit is None:
        return None
    hit.update(cached=True, timings={**hit["timings"], "start": prep["started"],
                                     "end": time.time(), "generation_s": 0.0,
                                     "model_loaded_now": False})
    hit["worker"] = worker_identity()
    return hit


def _result(prep: dict[str, Any], completion, n_threads: int, history_turns: int) -> dict:
    result = {
        "content": completion.text,
        "agent": prep["agent"].name,
        "model": model_name(prep["settings"].model_dump(), prep["site_model"]),
        "model_path": prep["spec"].path,
        "finish_reason": completion.finish_reason,
        "usage": completion.usage(),
        "timings": {**completion.timings(), "start": prep["started"], "end": time.time()},
        "history_turns_used": history_turns,
        "cached": False,
        "worker": worker_identity(),
        "n_threads": n_threads,
        "batched": bool(completion.extra.get("batched")),
    }
    if prep["settings"].performance.enable_caching:
        process_cache.put(prep["key"], result)
    return result


def process_chat_message(agent_config: dict, message: str, context: dict) -> dict:
    """Answer ``message`` as the agent described by ``agent_config`` (the agent YAML as a dict).

    ``context`` carries ``history`` (recent turns, oldest first), ``options`` (``seed``,
    ``max_tokens``, ``temperature`` overrides) and ``model`` (the site's model defaults:
    ``model``, ``n_ctx``, ``n_threads``, ``n_gpu_layers``, ``aliases``).
    Returns ``{"content", "agent", "model", "usage", "timings", "cached", ...}``.
    """
    prep = _prepare(agent_config, message, context)
    hit = _cached(prep)
    if hit is not None:
        return hit
    settings, spec = prep["settings"], prep["spec"]
    engine, loaded_now = get_engine(spec)
    messages = fit_to_context(prep["messages"], engine.count_tokens, spec.n_ctx,
                              prep["max_tokens"])
    completion = engine.chat(messages, temperature=prep["temperature"],
                             max_tokens=prep["max_tokens"], seed=prep["seed"],
                             stop=settings.stop or None, top_p=settings.top_p,
                             top_k=settings.top_k, repeat_penalty=settings.repeat_penalty,
                             loaded_now=loaded_now)
    return _result(prep, completion, engine.n_threads, len(messages) - 2)


def process_chat_batch(agent_config: dict, items: list[dict],
                       n_seq: int | None = None) -> list[dict]:
    """Answer several messages for one agent together, with batched decoding.

    ``items`` are ``{"message", "context"}``. The answers are decoded in one llama.cpp context
    (:mod:`hpc_chat.llm.batched`). Each slot of the returned list is that item's result, or
    ``{"error": ...}`` when that item alone failed (e.g. its prompt does not fit).
    ``n_seq`` is the batched context's number of sequences (the workflow's batch size).
    """
    from hpc_chat.llm.batched import GenRequest, get_batched_engine

    out: list[dict | None] = [None] * len(items)
    todo = []
    for i, item in enumerate(items):
        try:
            prep = _prepare(agent_config, item["message"], item.get("context") or {})
        except (ConfigError, ValueError) as exc:
            if isinstance(exc, ModelNotFoundError):
                raise  # the whole batch shares the model: retrying cannot help any of it
            out[i] = {"error": str(exc), "agent": agent_config.get("name")}
            continue
        hit = _cached(prep)
        if hit is not None:
            out[i] = hit
        else:
            todo.append((i, prep))
    if todo:
        spec = todo[0][1]["spec"]
        engine, loaded_now = get_engine(spec)
        batched = get_batched_engine(engine, n_seq or len(items))
        requests, fitted = [], []
        for i, prep in todo:
            try:
                msgs = fit_to_context(prep["messages"], engine.count_tokens, spec.n_ctx,
                                      prep["max_tokens"])
            except PromptTooLongError as exc:
                out[i] = {"error": str(exc), "agent": prep["agent"].name}
                continue
            s = prep["settings"]
            fitted.append((i, prep, len(msgs) - 2))
            requests.append(GenRequest(messages=msgs, temperature=prep["temperature"],
                                       max_tokens=prep["max_tokens"], seed=prep["seed"],
                                       stop=list(s.stop), top_p=s.top_p, top_k=s.top_k,
                                       repeat_penalty=s.repeat_penalty))
        for (i, prep, turns), completion in zip(fitted, batched.generate(requests)):
            if isinstance(completion, Exception):
                out[i] = {"error": str(completion), "agent": prep["agent"].name}
                continue
            completion.model_loaded_now = loaded_now
            loaded_now = False  # count the load once, on the first answer
            out[i] = _result(prep, completion, engine.n_threads, turns)
    return out  # type: ignore[return-value]


def worker_identity() -> dict[str, Any]:
    """Where this ran: host, pid and Parsl's worker rank/block when inside a Parsl worker."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "rank": os.environ.get("PARSL_WORKER_RANK"),
            "block": os.environ.get("PARSL_WORKER_BLOCK_ID")}


def aggregate_responses(responses: list[dict]) -> dict:
    """Combine several agents' answers into one reply, keeping each answer in the metadata.

    The rule (docs/agents.md): responses keep the order they are given in (the router's order,
    best-matching agent first); those with an ``error`` key are failures. One successful answer
    is the reply as it is. Several are joined, each under a ``[agent_name]`` header line,
    separated by a blank line. With no successful answer the reply is empty and ``ok`` is false.
    Token usage is summed over the successful answers.
    """
    good = [r for r in responses if not r.get("error")]
    failed = [r for r in responses if r.get("error")]
    if len(good) == 1:
        content = good[0]["content"]
    else:
        content = "\n\n".join(f"[{r['agent']}]\n{r['content']}" for r in good)
    usage = {"prompt_tokens": sum(r.get("usage", {}).get("prompt_tokens", 0) for r in good),
             "completion_tokens": sum(r.get("usage", {}).get("completion_tokens", 0)
                                      for r in good)}
    return {
        "content": content,
        "ok": bool(good),
        "agents": [r["agent"] for r in good],
        "primary_agent": good[0]["agent"] if good else None,
        "usage": usage,
        "cached": bool(good) and all(r.get("cached") for r in good),
        "responses": responses,
        "errors": [{"agent": r.get("agent"), "error": r["error"]} for r in failed],
    }
