"""Which OpenAI chat-completion parameters hpc_chat uses, which it accepts because their value
changes nothing, and the refusal of any other.

A parameter the server does not implement is refused, naming it, when its value would change
the answer (``logprobs: true``, ``frequency_penalty: 0.5``, ``logit_bias``): dropping it in
silence would return an answer the client did not ask for. A client that sends such a
parameter at its default (as LangChain sends ``n: 1``, ``logprobs: false``, or OpenAI's SDK
``stream_options``) still works: those are accepted and listed in the answer's provenance as
``ignored_params``. docs/openai-api.md lists both.
"""

from __future__ import annotations

from typing import Any

ROUTED_MODEL = "auto"  # the model name that asks for the routed multi-agent answer


class RequestError(ValueError):
    """What is wrong with a request line: ``param`` names the key, ``status`` the HTTP-like
    status its error entry gets."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str = "invalid_request"):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


# Read and used by hpc_chat (openai.batch); top_k, repeat_penalty, grammar and ignore_eos as
# llama-server.
USED = ("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "seed", "stop", "n", "response_format", "grammar", "tools", "tool_choice", "top_k",
        "repeat_penalty", "logprobs", "top_logprobs", "hpc_chat_mode", "ignore_eos")


def _none_or(*values: Any):
    return lambda v: v is None or any(v == x and type(v) is type(x) for x in values)


def _anything(_value: Any) -> bool:
    return True


# Not implemented; accepted only at a value that changes nothing.
INERT = {
    "user": _anything,  # the end user's id: never a conversation (docs/openai-api.md)
    "metadata": _anything,
    "store": _anything,
    "service_tier": _anything,
    "prompt_cache_key": _anything,
    "safety_identifier": _anything,
    "stream": _anything,  # the server reads it; a batch line's answer comes whole
    "stream_options": _anything,
    "parallel_tool_calls": _anything,  # an answer makes at most one call either way
    "frequency_penalty": lambda v: v is None or (isinstance(v, (int, float)) and v == 0),
    "presence_penalty": lambda v: v is None or (isinstance(v, (int, float)) and v == 0),
    "logit_bias": lambda v: v is None or v == {},
    "functions": lambda v: v is None or v == [],
    "function_call": _none_or("none"),
    "modalities": lambda v: v is None or v == ["text"],
    "reasoning_effort": _none_or(),
    "verbosity": _none_or(),
    "prediction": _none_or(),
    "audio": _none_or(),
    "web_search_options": _none_or(),
}


def ignored(body: dict[str, Any], where: str = "body.") -> list[str]:
    """The keys of ``body`` accepted but not used; raises :class:`RequestError` naming the
    first that is unknown or whose value would change the answer."""
    out = []
    for key in sorted(body):
        if key in USED:
            continue
        inert = INERT.get(key)
        if inert is None:
            raise RequestError(f"{where}{key} is not a parameter hpc_chat knows; the "
                               f"supported ones are listed in docs/openai-api.md",
                               param=f"{where}{key}", code="unsupported_parameter")
        if not inert(body[key]):
            what = "functions (the deprecated form of tools) are" if key in (
                "functions", "function_call") else f"{key} is"
            raise RequestError(f"{where}{key}: {what} not supported by hpc_chat yet; send it "
                               f"at its default or leave it out (docs/openai-api.md)",
                               param=f"{where}{key}", code="unsupported_parameter")
        out.append(key)
    return out
