"""The chat logic that runs in workers: pure Python, no Parsl, plain data in and out.

``process_chat_message`` is what a Parsl worker, a Globus Compute endpoint or a plain loop calls.
Its arguments and result are JSON-compatible, so it can be shipped anywhere, and the model it
loads stays loaded in the process for the next call.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from hpc_chat.agents.cache import cache_key, process_cache
from hpc_chat.agents.config import AgentConfig
from hpc_chat.errors import ConfigError, FormatError, ModelNotFoundError, PromptTooLongError
from hpc_chat.llm.models import ModelSpec, model_location
from hpc_chat.llm.registry import get_batched_engine, get_engine
from hpc_chat.protocol.context import SiteModel, TaskContext
from hpc_chat.protocol.failure import failure_code, failure_fields
from hpc_chat.protocol.output_format import OutputFormat
from hpc_chat.protocol.request import Completion, GenRequest, Sampling, stored_answer_mark
from hpc_chat.protocol.result import AgentAnswer
from hpc_chat.protocol.stream import StreamSpec
from hpc_chat.structured.compile import FORMAT_KEYS, output_format
from hpc_chat.structured.tools import offered_tools, result_text
from hpc_chat.structured.validate import check
from hpc_chat.util.configfile import format_validation_error
from hpc_chat.worker import engine_client, time_limit
from hpc_chat.worker.engine_client import Decoded
from hpc_chat.worker.fitting import fit
from hpc_chat.worker.provenance import job_id, model_file, versions
from hpc_chat.worker.stream import TokenSender


def build_messages(system_prompt: str, message: str, history: list[dict[str, Any]] | None,
                   tool_result: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """System prompt, then the recent history turns, then the new message: the user's, or a
    tool's result when ``tool_result`` names its call (``{"tool_call_id", "name"}``; the
    message is the result). Turns keep OpenAI's tool fields
    (:class:`~hpc_chat.protocol.request.GenRequest`)."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    for turn in history or []:
        role = turn.get("role")
        if role == "assistant" and turn.get("tool_calls"):
            msgs.append({"role": role, "content": str(turn.get("content") or ""),
                         "tool_calls": turn["tool_calls"]})
        elif role == "tool":
            msgs.append(_tool_turn(str(turn.get("content") or ""), turn))
        elif role in ("user", "assistant") and turn.get("content"):
            msgs.append({"role": role, "content": str(turn["content"]),
                         **stored_answer_mark(turn)})
    msgs.append(_tool_turn(message, tool_result) if tool_result
                else {"role": "user", "content": message})
    return msgs


def stored_turn(message: str, tool_result: dict[str, Any] | None) -> str:
    """The new message as a conversation's history keeps it (text turns only): a tool's
    result says which call it answers."""
    if not tool_result:
        return message
    return result_text(tool_result.get("name"), tool_result.get("tool_call_id"), message)


def _tool_turn(content: str, call: dict[str, Any]) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": str(call.get("tool_call_id") or ""),
            "name": str(call.get("name") or ""), "content": content}


def decoded_messages(msgs: list[dict[str, Any]],
                     history_turns_used: int) -> list[dict[str, Any]]:
    """The messages a worker decoded, rebuilt by the driver from those it sent
    (:func:`build_messages`).

    A result carries no copy of the conversation (it crosses Parsl's channel, Globus Compute's
    cloud and the nodes' logs), only how many of the newest history turns fitted the context
    (:func:`fit_to_context` drops the oldest); the driver puts the messages back into the
    provenance from what it sent. A text completion decoded its prompt alone (-1 turns: no
    system prompt either)."""
    if history_turns_used < 0:
        return [msgs[-1]]
    turns = msgs[1:-1]
    return [msgs[0], *turns[len(turns) - history_turns_used:], msgs[-1]]


def model_name(settings: dict[str, Any], site_model: SiteModel) -> str:
    """The model an agent runs: ``--model`` (``site_model.override``) over the agent's own
    ``model``, over the site's when the agent says ``default``."""
    name = site_model.override or settings.get("model") or "default"
    if name == "default":  # the agent defers to the site's choice of model
        name = site_model.model or "default"
    return name


def model_spec(settings: dict[str, Any], site_model: SiteModel,
               name: str | None = None) -> ModelSpec:
    """Agent settings override the site's model defaults; the name (``model_name`` unless
    given) is resolved on this host."""
    def pick(key):
        value = settings.get(key)
        return value if value is not None else getattr(site_model, key)

    name = name or model_name(settings, site_model)
    path = model_location(name, site_model.aliases)
    return ModelSpec(path=path, n_ctx=pick("n_ctx"), n_threads=pick("n_threads"),
                     n_gpu_layers=pick("n_gpu_layers"), n_batch=site_model.n_batch)


@dataclass
class Prepared:
    """One validated request and everything that decides its answer."""

    agent: AgentConfig
    request: GenRequest  # the messages before fitting to the context, and the sampling
    spec: ModelSpec
    model: str
    key: str
    exact: bool = False  # the caller's own messages: never shortened to fit
    stream: StreamSpec | None = None  # where to send the text as it grows (the token hub)
    engine: dict = field(default_factory=dict)  # the site's engine settings (engine_client)
    formats: dict = field(default_factory=dict)  # the request's own format keys: for replay
    started: float = field(default_factory=time.time)

    @property
    def caching(self) -> bool:
        return self.agent.config.performance.enable_caching


def prepare(agent_config: dict, message: str, context: dict) -> Prepared:
    """Validate one request: the agent, the message, the model and the sampling it gets."""
    try:
        agent = AgentConfig.model_validate(agent_config)
    except ValidationError as exc:
        name = agent_config.get("name", "?") if isinstance(agent_config, dict) else "?"
        raise ConfigError(format_validation_error(f"agent {name}", exc)) from None
    if not isinstance(message, str) or not message.strip():
        raise ValueError("the message is empty")
    try:
        ctx = TaskContext.model_validate(context or {})
    except ValidationError as exc:  # a hand-made context (the Python API) that is not one
        raise ValueError(format_validation_error("context", exc).replace("\n", "; ")) from None
    settings, site_model = agent.config, ctx.model
    options = {k: v for k, v in ctx.options.items() if v is not None}
    sampling = {**settings.sampling(), **{k: v for k, v in options.items()
                                          if k in Sampling.model_fields}}
    fmt = request_format(settings, options)
    if options.get("ignore_eos") and (fmt is not None or options.get("logprobs") is not None):
        own = fmt is not None and not any(options.get(k) is not None for k in FORMAT_KEYS)
        raise ValueError("ignore_eos cannot be combined with " + (
            f"agent {agent.name}'s own format (the response_format or grammar of its YAML), "
            f"which ends where its grammar ends: send response_format {{\"type\": \"text\"}} "
            f"with ignore_eos, or leave ignore_eos out" if own else
            "a format (response_format, grammar, tools) or logprobs: leave one of them out"))
    try:
        raw = message if options.get("text_completion") else None  # no chat template
        request = GenRequest(messages=[{"role": "user", "content": message}] if raw else
                             build_messages(ctx.system_prompt or settings.system_prompt,
                                            message, ctx.history, options.get("tool_result")),
                             output=fmt, tools=offered_tools(options.get("tools"),
                                                             options.get("tool_choice")),
                             logprobs=options.get("logprobs"), prompt=raw,
                             ignore_eos=options.get("ignore_eos", False), **sampling)
    except ValidationError as exc:  # e.g. an option out of range: the request's own fault
        raise ValueError(format_validation_error("options", exc).replace("\n", "; ")) from None
    settings_dict = settings.model_dump()
    name = model_name(settings_dict, site_model)
    spec = model_spec(settings_dict, site_model, name)
    key = cache_key(agent.to_dict(), request.messages, request.seed,
                    {**spec.model_dump(), **request.sampling(),  # every setting counts
                     "output": fmt.sha256 if fmt is not None else None,
                     "logprobs": request.logprobs, "ignore_eos": request.ignore_eos})
    if request.seed is None:  # drawn here and recorded, so that this answer can be replayed
        request = request.model_copy(update={"seed": random.getrandbits(31)})
    return Prepared(agent, request, spec, name, key, exact=ctx.exact, stream=ctx.stream,
                    engine=engine_client.settings(site_model),
                    formats={k: options[k] for k in FORMAT_KEYS if k in options})


def request_format(settings, options: dict[str, Any]) -> OutputFormat | None:
    """The format the answer must have: the request's ``response_format``, ``grammar`` or
    ``tools`` over the agent's own (an extractor agent's YAML), compiled (cached per schema);
    a :class:`~hpc_chat.errors.FormatError` (a ValueError) refuses the request."""
    if any(k in options for k in FORMAT_KEYS):
        return output_format(**{k: options.get(k) for k in FORMAT_KEYS})
    return output_format(settings.response_format, settings.grammar)


def _cached(prep: Prepared) -> dict | None:
    if not prep.caching:
        return None
    hit = process_cache.get(prep.key, prep.agent.config.performance.cache_ttl)
    if hit is None:
        return None
    hit.update(cached=True, timings={**hit["timings"], "start": prep.started,
                                     "end": time.time(), "generation_s": 0.0,
                                     "model_loaded_now": False})
    hit["worker"] = worker_identity()
    return hit


def _result(prep: Prepared, done: Decoded) -> dict:
    """One answer as its :class:`~hpc_chat.protocol.result.AgentAnswer` (plain data)."""
    completion, decoded = done.completion, done.request
    history_turns = len(decoded.messages) - 2
    result = {
        "content": completion.text,
        "agent": prep.agent.name,
        "model": prep.model,
        "model_path": prep.spec.path,
        "finish_reason": completion.finish_reason,
        "usage": completion.usage(),
        "timings": {**completion.timings(), "start": prep.started, "end": time.time()},
        "history_turns_used": history_turns,
        "cached": False,
        "worker": worker_identity(),
        "n_threads": done.n_threads,
        "batched": bool(completion.extra.get("batched")),
        "engine": done.engine,
        "engine_load": done.load,
    }
    if "logprobs" in completion.extra:
        result["logprobs"] = completion.extra["logprobs"]
    if decoded.output is not None:  # whether the answer fits its format, never assumed
        result["output_format"] = {**decoded.output.record(),
                                   **check(decoded.output, completion.text,
                                           completion.finish_reason)}
    result["provenance"] = provenance(prep, decoded, result)
    result = AgentAnswer.model_validate(result).wire()  # the declared shape, checked here
    if prep.caching and completion.finish_reason != "cancelled":  # a partial answer: never
        process_cache.put(prep.key, result)
    return result


def provenance(prep: Prepared, decoded: GenRequest, result: dict) -> dict:
    """How this answer was made (:mod:`hpc_chat.worker.provenance`): the sampler settings
    decoded, the model file, the software, and where and when it ran. The exact messages are
    the driver's to add (:func:`decoded_messages`): it has them already."""
    return {
        "agent": prep.agent.name, "model": prep.model, **model_file(prep.spec.path),
        "model_spec": {k: v for k, v in prep.spec.model_dump().items() if k != "path"},
        **versions(),
        # ignore_eos with the settings: what replay must send again for the same answer
        "sampling": {**decoded.sampling(), **({"ignore_eos": True} if decoded.ignore_eos else {})},
        "answer_sha256": hashlib.sha256(str(result["content"]).encode("utf-8",
                                                                     "replace")).hexdigest(),
        "job_id": job_id(), "host": result["worker"]["host"], "worker": result["worker"],
        "engine": result["engine"],
        "batched": result["batched"], "start": result["timings"]["start"],
        "end": result["timings"]["end"],
        **({"output_format": result["output_format"]} if "output_format" in result else {}),
        **({"tools": decoded.tools} if decoded.tools else {}),  # offered: the template's
        # the request's response_format, grammar, tools or tool_choice as sent (its text
        # format over an agent's own included): replay sends them again
        **({"request_format": prep.formats} if prep.formats else {}),
    }


def decode_here(preps: list[Prepared], n_seq: int | None) -> list[Decoded | Exception]:
    """Decode in this process's own engine: batched with ``n_seq`` sequences, or one at a time
    (``n_seq`` None); past the task's limit, stopped at the next token (``time_limit``)."""
    limit = time_limit.in_process()
    engine, loaded_now = get_engine(preps[0].spec)
    out: list[Decoded | Exception | None] = [None] * len(preps)
    fitted = []
    for j, prep in enumerate(preps):
        try:
            fitted.append((j, prep, fit(engine.count_tokens, prep.spec.n_ctx, prep.request,
                                        prep.exact)))
        except PromptTooLongError as exc:
            out[j] = exc
    if n_seq is None and any(p.request.logprobs is not None or p.request.prompt is not None
                             for p in preps):  # logprobs and text completions: the batched
        n_seq = 1  # engine's (its answers are the unbatched engine's)
    batched = get_batched_engine(engine, n_seq, preps[0].engine.get("prefix_cache_mb")) \
        if n_seq is not None else None
    stops = batched.template_stops if batched is not None else []  # the template's own
    senders = [TokenSender(prep.stream, [*decoded.stop, *(stops if decoded.prompt is None
                                                          else [])],
                           strip=decoded.prompt is None) if prep.stream else None
               for (_, prep, decoded) in fitted]
    completions: list = [None] * len(fitted)
    try:
        if batched is None:  # after the limit, the rest are not started
            completions = [None if time_limit.passed(limit) else _complete(
                engine, d, s, time_limit.stopper(limit)) for (_, _, d), s in zip(fitted, senders)]
        else:
            completions = batched.generate([d for _, _, d in fitted], on_text=[
                time_limit.watch(limit, sender) for sender in senders])
    finally:  # every stream ends, with the rest of its answer when there is one
        late = time_limit.passed(limit)
        for sender, done in zip(senders, completions):
            if sender is not None:
                sender.finish(None if late else getattr(done, "text", None))
    if late:
        raise time_limit.timed_out(limit)  # type: ignore[arg-type]
    for (j, _, decoded), completion in zip(fitted, completions):
        if isinstance(completion, Exception):
            out[j] = completion
            continue
        completion.model_loaded_now = loaded_now
        loaded_now = False  # count the load once, on the first answer
        out[j] = Decoded(completion, decoded, engine.n_threads)
    return out  # type: ignore[return-value]


def _complete(engine, request: GenRequest, on_text, until) -> Completion | Exception:
    """One unbatched answer; a format the engine cannot parse fails this request alone."""
    try:
        return engine.complete(request, on_text=on_text, until=until)
    except FormatError as exc:
        return exc


def answer_items(agent_config: dict, items: list[dict],
           n_seq: int | None = None) -> list[dict | Exception]:
    """Every item's result, or the exception that item alone failed with.

    ``items`` are ``{"message", "context"}``. Inside a Parsl worker the requests go to the
    node's engine (:mod:`hpc_chat.worker.engine_client`), which decodes them together with
    every other worker's, unless the site says ``model.engine: worker``. Otherwise, with
    ``n_seq`` the answers are decoded together in a batched context of that many sequences
    (:mod:`hpc_chat.llm.batched`); without it, one at a time by the unbatched engine. Either
    way the same :class:`GenRequest` goes to the engine.
    """
    out: list[dict | Exception | None] = [None] * len(items)
    todo: list[tuple[int, Prepared]] = []
    for i, item in enumerate(items):
        try:
            prep = prepare(agent_config, item["message"], item.get("context") or {})
        except ModelNotFoundError:
            raise  # the whole task shares the model: retrying cannot help any of it
        except (ConfigError, ValueError) as exc:
            out[i] = exc
            continue
        out[i] = _cached(prep)
        if out[i] is None:
            todo.append((i, prep))
    if not todo:
        return out  # type: ignore[return-value]
    preps = [prep for _, prep in todo]
    if engine_client.wanted(preps[0].engine):
        results = engine_client.decode(preps[0].spec, preps[0].engine, preps, finish=_result)
    else:
        results = [done if isinstance(done, Exception) else _result(prep, done)
                   for prep, done in zip(preps, decode_here(preps, n_seq))]
    for (i, _), result in zip(todo, results):
        out[i] = result
    return out  # type: ignore[return-value]


def process_chat_message(agent_config: dict, message: str, context: dict) -> dict:
    """Answer ``message`` as the agent described by ``agent_config`` (the agent YAML as a dict).

    ``context`` carries ``history`` (recent turns, oldest first), ``options`` (``seed``,
    ``max_tokens``, ``temperature`` overrides) and ``model`` (the site's model defaults:
    ``model``, ``n_ctx``, ``n_threads``, ``n_gpu_layers``, ``aliases``, and ``override`` for
    ``--model``). Returns ``{"content", "agent", "model", "usage", "timings", "cached", ...}``;
    a request that cannot be answered raises (the retry handler decides about a retry).
    """
    result = answer_items(agent_config, [{"message": message, "context": context}])[0]
    if isinstance(result, Exception):
        raise result
    return result


def process_chat_batch(agent_config: dict, items: list[dict],
                       n_seq: int | None = None) -> list[dict]:
    """Answer several messages for one agent together, with batched decoding.

    Each slot of the returned list is that item's result, or ``{"error": ...}`` when that item
    alone failed (e.g. its prompt does not fit). ``n_seq`` is the batched context's number of
    sequences (the workflow's batch size).
    """
    return [{"error": str(r), **failure_fields(failure_code(r)), "agent": agent_config.get("name")}
            if isinstance(r, Exception) else r
            for r in answer_items(agent_config, items, n_seq or len(items))]


def worker_identity() -> dict[str, Any]:
    """Where this ran: host, pid and Parsl's worker rank/block when inside a Parsl worker.
    Asked once per process (keyed by pid: a forked child asks again), not once per answer."""
    global _identity
    pid = os.getpid()
    if _identity.get("pid") != pid:  # replaced whole: a thread never sees half of one
        _identity = {"host": socket.gethostname(), "pid": pid,
                     "rank": os.environ.get("PARSL_WORKER_RANK"),
                     "block": os.environ.get("PARSL_WORKER_BLOCK_ID")}
    return dict(_identity)


_identity: dict[str, Any] = {}
