"""Why a request failed, as a code: the one thing its HTTP status and OpenAI error come from.

The code is chosen where the failure happens, from what failed (the exception's type, the
history store, the model table), and travels with the result as ``error_code``; the server's
error response and an OpenAI batch error entry both read it (:func:`code_of`), never the
error's text, which may quote a prompt.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from hpc_chat.errors import ConfigError, FormatError, PromptTooLongError


class FailureCode(str, Enum):
    """A failure's code, its HTTP status, the request parameter at fault, and its kind:
    ``input`` (the request itself: final until it changes) or ``runtime`` (a later try may
    get past it)."""

    MODEL_NOT_FOUND = "model_not_found"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    INVALID_RESPONSE_FORMAT = "invalid_response_format"
    INVALID_GRAMMAR = "invalid_grammar"
    INVALID_TOOLS = "invalid_tools"
    INVALID_REQUEST = "invalid_request"
    HISTORY_UNAVAILABLE = "history_unavailable"
    GENERATION_FAILED = "generation_failed"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def param(self) -> str | None:
        return _PARAM.get(self)

    @property
    def kind(self) -> str:
        return "input" if self.status < 500 else "runtime"


_STATUS = {FailureCode.MODEL_NOT_FOUND: 404, FailureCode.CONTEXT_LENGTH_EXCEEDED: 400,
           FailureCode.INVALID_RESPONSE_FORMAT: 400, FailureCode.INVALID_GRAMMAR: 400,
           FailureCode.INVALID_TOOLS: 400,
           FailureCode.INVALID_REQUEST: 400, FailureCode.HISTORY_UNAVAILABLE: 500,
           FailureCode.GENERATION_FAILED: 500}
_PARAM = {FailureCode.MODEL_NOT_FOUND: "body.model",
          FailureCode.CONTEXT_LENGTH_EXCEEDED: "body.messages",
          FailureCode.INVALID_RESPONSE_FORMAT: "body.response_format",
          FailureCode.INVALID_GRAMMAR: "body.grammar",
          FailureCode.INVALID_TOOLS: "body.tools"}
# When several agents failed differently, the code of the whole request: the first of these.
_PRECEDENCE = list(FailureCode)


def failure_code(exc: BaseException) -> FailureCode:
    """The code of a request that raised ``exc`` (Parsl may wrap a worker's exception in
    ``e_value``): a prompt too long for the context, a format that cannot be enforced (by the
    key at fault), a request the engine cannot take (a ``ValueError``), or anything else a
    later try may get past."""
    inner = getattr(exc, "e_value", None) or exc
    if isinstance(inner, PromptTooLongError):
        return FailureCode.CONTEXT_LENGTH_EXCEEDED
    if isinstance(inner, FormatError):
        return {"grammar": FailureCode.INVALID_GRAMMAR, "tools": FailureCode.INVALID_TOOLS,
                "tool_choice": FailureCode.INVALID_TOOLS}.get(
            inner.param, FailureCode.INVALID_RESPONSE_FORMAT)
    if isinstance(inner, ValueError) and not isinstance(inner, ConfigError):
        return FailureCode.INVALID_REQUEST
    return FailureCode.GENERATION_FAILED


def code_of(result: dict[str, Any]) -> FailureCode:
    """The code a failed result carries; a line written before codes existed (an older
    output being resumed) is read by its kind."""
    try:
        return FailureCode(result.get("error_code"))
    except ValueError:
        return FailureCode.INVALID_REQUEST if result.get("error_kind") == "input" \
            else FailureCode.GENERATION_FAILED


def combined(codes: list[FailureCode]) -> FailureCode:
    """The code of a request whose agents all failed: a missing model or a prompt too long
    wins; ``invalid_request`` only when every agent failed on the input."""
    if not codes:
        return FailureCode.GENERATION_FAILED
    first = min(codes, key=_PRECEDENCE.index)
    if first is FailureCode.INVALID_REQUEST and any(c.kind != "input" for c in codes):
        return min((c for c in codes if c.kind != "input"), key=_PRECEDENCE.index)
    return first


def failure_fields(code: FailureCode) -> dict[str, str]:
    """What a failed result says of its failure besides the message: its kind and code."""
    return {"error_kind": code.kind, "error_code": code.value}


def status_of(result: dict[str, Any]) -> tuple[int, str, str | None]:
    """The HTTP status, code and parameter of a request that failed while it was answered
    (the server's error response, an OpenAI batch error entry): from the code the failure
    carries, never from its text."""
    code = code_of(result)
    return code.status, code.value, code.param
