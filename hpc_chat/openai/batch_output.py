"""OpenAI Batch API output lines: an answer, an embedding list, a failure (the request's
error body under its HTTP-like status, or ``response: null`` for a line that was no request),
each with the ``hpc_chat`` object that ``--resume`` and ``hpc-chat stats`` read back
(:func:`outcome`). The request lines are :mod:`hpc_chat.openai.batch`'s."""

from __future__ import annotations

import uuid
from typing import Any

from hpc_chat.openai import completions, responses
from hpc_chat.openai.chat import chat_completion, logprobs_of, system_fingerprint


def is_output_line(obj: Any) -> bool:
    return isinstance(obj, dict) and "custom_id" in obj and "response" in obj


def _ids() -> tuple[str, str]:
    return f"batch_req_{uuid.uuid4().hex}", f"req_{uuid.uuid4().hex}"


def answer_line(custom_id: str, model: str, result: dict[str, Any], *, line: int,
                request_fingerprint: str, finished_at: float,
                provenance: dict[str, Any] | None,
                text_completion: tuple[str, bool] | None = None,
                responses_body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An answered request: a ``chat.completion``; for a ``/v1/completions`` line
    (``text_completion``: its prompt, and whether to ``echo`` it) a ``text_completion``
    with its one choice; for a ``/v1/responses`` line (``responses_body``: its body) a
    ``response``."""
    line_id, request_id = _ids()
    if responses_body is not None:
        body = responses.response_object(  # not stored: no previous_response_id reaches it
            responses.new_id(), {**responses_body, "store": False}, finished_at,
            result=result, provenance=provenance)
    elif text_completion is None:
        body = chat_completion(model, result, finished_at, provenance)
    else:
        prompt, echo = text_completion
        body = completions.completion_object(
            model, [completions.choice(0, prompt, result, echo, logprobs_of(result))],
            [result], finished_at, system_fingerprint(provenance), [provenance])
    return {"id": line_id, "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": body},
            "error": None,
            "hpc_chat": {"line": line, "request": request_fingerprint, "ok": True,
                         "finished_at": finished_at}}


def embedding_answer_line(custom_id: str, body: dict[str, Any], *, line: int,
                          request_fingerprint: str, finished_at: float) -> dict[str, Any]:
    """An answered ``/v1/embeddings`` line: OpenAI's embedding list as the body."""
    line_id, request_id = _ids()
    return {"id": line_id, "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": body},
            "error": None,
            "hpc_chat": {"line": line, "request": request_fingerprint, "ok": True,
                         "finished_at": finished_at}}


def error_line(custom_id: str | None, message: str, *, line: int, kind: str,
               request_fingerprint: str | None, finished_at: float, status: int | None = None,
               code: str | None = None, param: str | None = None,
               provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failed request (``status`` given: OpenAI's error body under that status), or a line
    that is no request at all (``response: null``, ``error``)."""
    line_id, request_id = _ids()
    status = status or (400 if kind == "input" else 500)
    error = {"message": message, "type": "invalid_request_error" if status < 500
             else "server_error", "param": param,
             "code": code or ("invalid_request" if kind == "input" else "generation_failed")}
    record = {"id": line_id, "custom_id": custom_id, "response": None, "error": None,
              "hpc_chat": {"line": line, "request": request_fingerprint, "ok": False,
                           "error_kind": kind, "finished_at": finished_at,
                           "provenance": provenance}}
    if custom_id is None:
        record["error"] = {"code": error["code"], "message": message}
    else:
        record["response"] = {"status_code": status, "request_id": request_id,
                              "body": {"error": error}}
    return record


def outcome(line: dict[str, Any]) -> dict[str, Any] | None:
    """What ``--resume`` and ``hpc-chat stats`` need of an output or error line, in the
    native line's terms (``id``, ``ok``, ``request``, ``error_kind``, ``finished_at``,
    ``latency_s``, tokens, agents); None for a line they cannot use."""
    ext = line.get("hpc_chat")
    if not isinstance(ext, dict):
        return None
    # A line that was no request has no custom_id: its line number stands for it.
    ident = line.get("custom_id") if isinstance(line.get("custom_id"), str) else None
    number = ext.get("line")
    if ident is None and (not isinstance(number, int) or isinstance(number, bool)):
        return None
    finished = ext.get("finished_at")
    body = line["response"].get("body") if isinstance(line.get("response"), dict) else None
    body = body if isinstance(body, dict) else {}
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    prov = body.get("hpc_chat") if isinstance(body.get("hpc_chat"), dict) else {}
    if isinstance(prov.get("prompts"), list) and prov["prompts"] and \
            isinstance(prov["prompts"][0], dict):  # a text completion's: one per prompt
        prov = prov["prompts"][0]
    listed = prov.get("agents") if isinstance(prov.get("agents"), list) else []
    agents = [a.get("agent") for a in listed if isinstance(a, dict)]
    return {"id": ident, "line": number, "ok": ext.get("ok") is True,
            "request": ext.get("request"), "error_kind": ext.get("error_kind"),
            "finished_at": finished if isinstance(finished, (int, float)) else 0.0,
            "latency_s": ext.get("latency_s"), "agents": agents,
            "prompt_tokens": usage.get("prompt_tokens", usage.get("input_tokens")),
            "completion_tokens": usage.get("completion_tokens", usage.get("output_tokens"))}
