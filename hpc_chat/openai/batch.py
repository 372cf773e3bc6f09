"""OpenAI Batch API files: the request lines read, the output and error lines written.

The format vLLM's ``run-batch``, ALCF FIRST's batch API and OpenAI itself read::

    {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "balanced_agent", "messages": [...], "max_tokens": 64, "seed": 1}}

``body.model`` names an agent, or :data:`ROUTED_MODEL` (``auto``) for the routed multi-agent
answer that ``hpc-chat ask`` gives. ``messages`` may hold several turns and their own system
message (it replaces the agent's system prompt). ``max_tokens`` (or ``max_completion_tokens``),
``temperature``, ``top_p``, ``seed``, ``stop``, ``response_format`` (and, as llama-server,
``top_k``, ``repeat_penalty`` and a GBNF ``grammar``) are used; ``n`` must be 1. Another OpenAI
parameter is accepted only at a value that changes nothing, and is then listed in the answer's
provenance (``ignored_params``); any other value, or an unknown key, is refused naming it
(:mod:`hpc_chat.openai.params`).

A ``/v1/completions`` line (one ``prompt``, continued as it is by one agent's model) is
checked as the server checks one and carried as the chat request of its prompt, with the
``text_completion`` option; a ``/v1/embeddings`` line is an
:class:`~hpc_chat.openai.embeddings.EmbeddingLine`.

An answer is an output line in OpenAI's batch output shape, its body a ``chat.completion`` (a
``text_completion``, an embedding list); a
request that failed is a line of the same shape in the errors file beside the output
(``OUT.errors.jsonl``), with its HTTP-like ``status_code`` and OpenAI's error body. A line that
is not a request at all (bad JSON, no ``custom_id``) has ``response: null`` and an ``error``.
Every line also carries an ``hpc_chat`` object: the input line number, the request's
fingerprint, the outcome kind and time (what ``--resume`` reads), and the provenance.

This module reads request lines; the output lines are :mod:`hpc_chat.openai.batch_output`'s.
It only turns dicts into dicts; reading files and running requests are
:mod:`hpc_chat.batch.input`, :mod:`hpc_chat.batch.output` and :mod:`hpc_chat.batch.run`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hpc_chat.errors import FormatError
from hpc_chat.openai import completions, responses
from hpc_chat.openai.embeddings import (
    EMBEDDINGS_URL,
    EmbeddingLine,
    EmbeddingRequestError,
    embedding_line,
)
from hpc_chat.openai.params import ROUTED_MODEL, RequestError, ignored
from hpc_chat.protocol.failure import failure_code
from hpc_chat.protocol.request import Mode
from hpc_chat.structured.compile import FORMAT_KEYS, line_over_run, output_format

CHAT_URL = "/v1/chat/completions"
URLS = (CHAT_URL, completions.URL, responses.URL, EMBEDDINGS_URL)  # what a line may ask
ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP = 64  # characters of one stop string (a stream holds back that much text)
MAX_TOP_LOGPROBS = 20  # OpenAI's bound
MAX_SEED = 2**32 - 2  # llama.cpp's seeds are 32-bit, and 2**32 - 1 means "a random one"


def is_request_line(obj: Any) -> bool:
    """An OpenAI batch request line (rather than hpc_chat's ``{"id", "prompt"}``), even one
    that lacks a key it needs (it is then reported as such)."""
    return isinstance(obj, dict) and "prompt" not in obj and \
        any(k in obj for k in ("custom_id", "body", "url", "method"))


@dataclass
class ChatRequest:
    """One request line, checked: what the workflow needs to answer it."""

    custom_id: str
    model: str
    prompt: str  # the last message's text: the user's, or a tool's result
    history: list[dict[str, Any]]  # the turns before it (OpenAI's tool fields kept)
    system: str | None  # the line's own system message, if any
    options: dict[str, Any]
    ignored: list[str] = field(default_factory=list)
    fingerprint: str = ""
    body: dict[str, Any] = field(default_factory=dict)  # as given: sent on to a server
    url: str = CHAT_URL  # or /v1/completions: its prompt continued as it is
    echo: bool = False  # a text completion's answer begins with its prompt
    responses_body: dict[str, Any] | None = None  # a /v1/responses line's body, as given

    @property
    def agents(self) -> list[str] | None:
        return None if self.model == ROUTED_MODEL else [self.model]



def fingerprint(body: Any) -> str:
    """The request as it was asked: an edited line is another request on ``--resume``."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def parse_request(obj: dict[str, Any]) -> ChatRequest | EmbeddingLine:
    """Check one request line (a chat completion, or embeddings); raises
    :class:`RequestError` naming the key at fault."""
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise RequestError("\"custom_id\" must be a non-empty string", param="custom_id")
    method, url = obj.get("method", "POST"), obj.get("url")
    if method != "POST" or url not in URLS:
        raise RequestError(f"only POST {', '.join(URLS)} are supported here, not {method} "
                           f"{url}", param="url", status=404, code="unsupported_url")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise RequestError("\"body\" must be a JSON object", param="body")
    if url == completions.URL:
        return _completion(custom_id, body)
    if url == responses.URL:
        return _response(custom_id, body)
    if url == EMBEDDINGS_URL:
        try:
            return embedding_line(custom_id, body, fingerprint(body))
        except EmbeddingRequestError as exc:
            raise RequestError(str(exc), param=exc.param, code=exc.code) from None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("body.model must name an agent (or \"auto\")", param="body.model")
    system, history, prompt, answers = _messages(body.get("messages"))
    unused = ignored(body)
    options = _options(body)
    if answers is not None:  # the last message is a tool's result
        options["tool_result"] = answers
    return ChatRequest(custom_id, model, prompt, history, system, options,
                       ignored=unused, fingerprint=fingerprint(body), body=body)


def _completion(custom_id: str, body: dict[str, Any]) -> ChatRequest:
    """A ``/v1/completions`` line: checked as the server checks one, then as the chat request
    that carries its prompt (:func:`hpc_chat.openai.completions.chat_bodies`). A line holds
    one prompt (a line is one request, with one answer line); it continues one agent's model.
    """
    try:
        bodies = completions.chat_bodies(body)
    except RequestError as exc:
        raise RequestError(f"body.{exc}" if exc.param and str(exc).startswith(exc.param)
                           else str(exc), param=f"body.{exc.param}" if exc.param else "body",
                           code=exc.code) from None
    if len(bodies) > 1:
        raise RequestError("a batch line of /v1/completions takes one prompt: write one line "
                           "per prompt", param="body.prompt")
    if body.get("stream") is True:
        raise RequestError("a batch line is not streamed: leave out body.stream",
                           param="body.stream")
    chat = {k: v for k, v in bodies[0].items() if k != "stream"}
    req = parse_request({"custom_id": custom_id, "url": CHAT_URL, "body": chat})
    req.options.update(text_completion=True, mode=Mode.ROUTE.value)  # no chat template
    if "max_tokens" not in body:  # OpenAI's default, or the run's: line_options
        del req.options["max_tokens"]
    req.url, req.echo, req.body = completions.URL, body.get("echo") is True, body
    req.fingerprint = fingerprint(body)
    return req


# A Responses body's keys, and the chat body's keys they become (responses.chat_body).
RESPONSES_KEYS = {"max_output_tokens": "max_tokens", "input": "messages",
                  "text.format": "response_format"}


def _response(custom_id: str, body: dict[str, Any]) -> ChatRequest:
    """A ``/v1/responses`` line: checked as the server checks one, then carried as the chat
    request of its messages (:func:`hpc_chat.openai.responses.chat_body`); its answer is a
    ``response`` object. A line stands alone: it cannot continue a stored response, and its
    own response is not stored for another to continue."""
    for key, why in (("previous_response_id", "a batch line stands alone: put the earlier "
                      "turns in its input"), ("stream", "a batch line is not streamed")):
        if body.get(key) not in (None, False):
            raise RequestError(f"body.{key} is not supported in a batch ({why})",
                               param=f"body.{key}", code="unsupported_parameter")
    try:
        chat, _ = responses.chat_body({k: v for k, v in body.items() if k != "stream"}, [])
    except RequestError as exc:
        raise RequestError(f"body.{exc}" if exc.param and str(exc).startswith(exc.param)
                           else str(exc), param=f"body.{exc.param}" if exc.param else "body",
                           code=exc.code) from None
    try:
        req = parse_request({"custom_id": custom_id, "url": CHAT_URL, "body": chat})
    except RequestError as exc:  # named as the line wrote it, not as the chat body has it
        theirs = next((f"body.{k}" for k, v in RESPONSES_KEYS.items()
                       if (exc.param or "").startswith(f"body.{v}")), exc.param)
        raise RequestError(str(exc).replace(exc.param or "\0", theirs or ""), param=theirs,
                           code=exc.code) from None
    req.url, req.responses_body = responses.URL, body  # req.body: the chat body, for a server
    req.fingerprint = fingerprint(body)
    return req


def line_options(req: ChatRequest, run: dict[str, Any]) -> dict[str, Any]:
    """A line's options over the run's (``batch --max-tokens``, ``--schema``). A text
    completion that sets no max_tokens takes the run's, else OpenAI's 16 (as the server
    does), and takes no format: its continuation is raw text, and the server refuses one."""
    if req.url != completions.URL:
        return line_over_run(run, req.options)
    if any(run.get(k) is not None for k in FORMAT_KEYS):
        raise RequestError("a text completion takes no response_format, grammar or tools "
                           "(the run's --schema applies to chat lines)",
                           param="body.response_format")
    return {"max_tokens": completions.DEFAULT_MAX_TOKENS, **run, **req.options}


def _messages(messages: Any) -> tuple[str | None, list[dict[str, Any]], str,
                                     dict[str, str] | None]:
    """The system prompt, the turns before the last, the last message's text and, when the
    last message is a tool's result, the call it answers (``{"tool_call_id", "name"}``).
    Turns keep OpenAI's tool fields (:class:`~hpc_chat.protocol.request.GenRequest`)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("body.messages must be a non-empty list", param="body.messages")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    calls: dict[str, str] = {}  # an earlier call's id -> its function's name
    for i, msg in enumerate(messages):
        where = f"body.messages[{i}]"
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            raise RequestError(f"{where} must be an object whose role is one of "
                               f"{', '.join(ROLES)}", param=where)
        if msg["role"] == "assistant" and msg.get("tool_calls"):
            content = msg.get("content")
            turns.append({"role": "assistant",
                          "content": "" if content is None else _text(content, where),
                          "tool_calls": _calls(msg["tool_calls"], where, calls)})
            continue
        content = _text(msg.get("content"), where)
        if msg["role"] == "tool":  # a call's result
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise RequestError(f"{where}.tool_call_id must name the call this answers",
                                   param=f"{where}.tool_call_id")
            turns.append({"role": "tool", "tool_call_id": call_id,
                          "name": calls.get(call_id, ""), "content": content})
        elif msg["role"] in ("system", "developer"):
            if turns:
                raise RequestError(f"{where}: a system message must come before the others",
                                   param=where)
            system.append(content)
        else:
            turns.append({"role": msg["role"], "content": content})
    if not turns or turns[-1]["role"] not in ("user", "tool"):
        raise RequestError("body.messages must end with a user or tool message",
                           param="body.messages")
    last = turns[-1]
    if not last["content"].strip():
        raise RequestError(f"body.messages: the last {last['role']} message is empty",
                           param="body.messages")
    answers = {"tool_call_id": last["tool_call_id"], "name": last["name"]} \
        if last["role"] == "tool" else None
    return ("\n\n".join(system) or None), turns[:-1], last["content"], answers


def _calls(tool_calls: Any, where: str, calls: dict[str, str]) -> list[dict[str, Any]]:
    """An assistant turn's tool calls, checked, each ``arguments`` as a JSON string."""
    if not isinstance(tool_calls, list):
        raise RequestError(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
    out = []
    for j, call in enumerate(tool_calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or \
                not isinstance(fn.get("arguments", ""), (str, dict)):
            raise RequestError(f"{where}.tool_calls[{j}] must be {{\"id\", \"type\": "
                               f"\"function\", \"function\": {{\"name\", \"arguments\"}}}}",
                               param=f"{where}.tool_calls[{j}]")
        call_id = call.get("id") if isinstance(call.get("id"), str) else f"call_{len(calls)}"
        calls[call_id] = fn["name"]
        arguments = fn.get("arguments") or {}
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        out.append({"id": call_id, "type": "function",
                    "function": {"name": fn["name"], "arguments": arguments}})
    return out


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise RequestError(f"{where}.content must be text (a string or text parts; images and "
                       f"audio are not supported)", param=f"{where}.content")


def body_fields(options: dict[str, Any]) -> dict[str, Any]:
    """A run's options (``--mode``, ``--seed``...) as a request body carries them: the mode
    as our ``hpc_chat_mode``."""
    out = {k: v for k, v in options.items() if k != "mode"}
    if options.get("mode") is not None:
        out["hpc_chat_mode"] = options["mode"]
    return out


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    mode = body.get("hpc_chat_mode")
    if mode is not None:
        if mode not in [m.value for m in Mode]:
            raise RequestError(f"body.hpc_chat_mode must be one of "
                               f"{', '.join(m.value for m in Mode)}", param="body.hpc_chat_mode")
        options["mode"] = mode
    n = body.get("n", 1)
    if n != 1:
        raise RequestError("body.n must be 1 (one answer per request)", param="body.n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        if not _is_int(max_tokens) or not 1 <= max_tokens <= 32768:
            raise RequestError(f"body.{key} must be an integer from 1 to 32768",
                               param=f"body.{key}")
        options["max_tokens"] = max_tokens
    for key, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                not low <= value <= high or (key == "top_p" and value == 0):
            above = "above 0" if key == "top_p" else f"from {low:g}"
            raise RequestError(f"body.{key} must be a number {above} to {high:g}",
                               param=f"body.{key}")
        options[key] = float(value)
    seed = body.get("seed")
    if seed is not None:
        if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
            raise RequestError(f"body.seed must be an integer from 0 to {MAX_SEED}",
                               param="body.seed")
        options["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or len(stop) > 4 or \
                not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP for s in stop):
            raise RequestError(f"body.stop must be a string or a list of up to 4 strings of "
                               f"1 to {MAX_STOP} characters", param="body.stop")
        options["stop"] = stop
    for key, kind, low in (("top_k", int, 0), ("repeat_penalty", float, 0.0)):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low or \
                (kind is int and not _is_int(value)) or (key == "repeat_penalty" and not value):
            raise RequestError(f"body.{key} must be {'an integer' if kind is int else 'a number'}"
                               f" {'>= 0' if kind is int else 'above 0'}", param=f"body.{key}")
        options[key] = kind(value)
    options.update(_format(body))
    options.update(_logprobs(body))
    options.update(_ignore_eos(body, options))
    return options


def _ignore_eos(body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """llama-server's ``ignore_eos``: answers of exactly ``max_tokens`` (for benchmarks)."""
    value = body.get("ignore_eos")
    if value is None or value is False:
        return {}
    if value is not True:
        raise RequestError("body.ignore_eos must be true or false", param="body.ignore_eos")
    formatted = output_format(**{k: options.get(k) for k in FORMAT_KEYS}) is not None
    if formatted or "logprobs" in options:
        raise RequestError("body.ignore_eos cannot be combined with a format (response_format, "
                           "grammar, tools) or logprobs: a format ends where its grammar "
                           "ends, and logprobs would be read with the end-of-generation "
                           "tokens taken out", param="body.ignore_eos")
    return {"ignore_eos": True}


def _logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """``logprobs: true`` with ``top_logprobs`` (0 to 20 alternatives per token)."""
    wanted, top = body.get("logprobs"), body.get("top_logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise RequestError("body.logprobs must be true or false", param="body.logprobs")
    if top is not None and (not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise RequestError(f"body.top_logprobs must be an integer from 0 to "
                           f"{MAX_TOP_LOGPROBS}", param="body.top_logprobs")
    if top and not wanted:
        raise RequestError("body.top_logprobs needs body.logprobs: true",
                           param="body.top_logprobs")
    return {"logprobs": top or 0} if wanted else {}


def _format(body: dict[str, Any]) -> dict[str, Any]:
    """``response_format``, ``grammar``, ``tools`` and ``tool_choice``, checked here
    (compiled, and every schema keyword the grammar would not enforce refused) so a bad one
    never reaches a worker."""
    given = {k: body[k] for k in FORMAT_KEYS if body.get(k) is not None}
    try:
        output_format(**{k: given.get(k) for k in FORMAT_KEYS})
    except FormatError as exc:
        text = str(exc) if str(exc).startswith(exc.param) else f"{exc.param}: {exc}"
        raise RequestError(f"body.{text}", param=f"body.{exc.param}",
                           code=failure_code(exc).value) from None
    return given  # a text format or tool_choice none too: it replaces an agent's own


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
