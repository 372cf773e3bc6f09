"""One request's result, as the workflow returns it: the aggregated answer, or why it failed.

Every caller reads this shape, declared as :class:`~hpc_chat.protocol.result.RequestResult`
(the CLI, the batch writer, the server): ``prompt``, ``ok``,
``response``, ``agents``, ``latency_s``, the token counts, ``finish_reason``, ``error`` with
its ``error_kind`` and ``error_code`` (:mod:`hpc_chat.protocol.failure`), ``cached``, ``site``,
the ``routes`` taken and each agent's own answer in ``responses``. The statistics get a
:class:`~hpc_chat.driver.stats.RequestRecord` of the same request.
"""

from __future__ import annotations

import time
from typing import Any

from hpc_chat.agents.routing import Route
from hpc_chat.driver.stats import RequestRecord
from hpc_chat.errors import HpcChatError
from hpc_chat.protocol.failure import FailureCode, code_of
from hpc_chat.protocol.failure import combined as combined_code
from hpc_chat.protocol.result import FinishReason, RequestResult, Usage


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failed agent task, fit for an output file."""
    name = type(exc).__name__
    if name == "AppTimeout":
        return "timed out (performance.timeout_seconds)"
    text = str(exc).strip() or name
    return text if isinstance(exc, HpcChatError) else f"{name}: {text}"


def request_result(start: float, text: Any, combined: dict | None, *, error: str | None,
                   routes: list[Route] | None, code: FailureCode | None,
                   site: str | None) -> tuple[dict[str, Any], RequestRecord]:
    """The result of a request that started at ``start``, from the aggregated answers
    (``combined``; None when it failed before any agent was asked)."""
    end = time.time()
    ok = combined is not None and combined["ok"]
    responses = combined["responses"] if combined else []
    if not ok and code is None:  # input only when every agent failed on the input
        code = combined_code([code_of(r) for r in responses if r.get("error")])
    loads = sum(1 for r in responses
                if not r.get("error") and r.get("timings", {}).get("model_loaded_now"))
    usage = Usage.of(combined["usage"]) if combined else Usage()
    record = RequestRecord(
        ok=ok, start=start, end=end,
        completion_tokens=usage.completion_tokens, prompt_tokens=usage.prompt_tokens,
        agents=tuple(combined["agents"]) if combined else (),
        cached=bool(combined and combined["cached"]), model_loads=loads)
    return RequestResult.model_validate({
        "prompt": text,
        "ok": ok,
        "response": combined["content"] if ok else None,
        "agents": combined["agents"] if combined else [],
        "latency_s": round(end - start, 4),
        "completion_tokens": record.completion_tokens,
        "prompt_tokens": record.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        # "length" when any agent's answer was cut at max_tokens; in a collaboration mode,
        # the reply's own
        "finish_reason": ((combined.get("finish_reason") or finish_reason(responses))
                          if ok else None),
        "error": error,
        "error_kind": None if ok else code.kind,
        "error_code": None if ok else code.value,
        "cached": record.cached,
        "site": site,
        "routes": [{"agent": r.agent, "score": round(r.score, 4), "matched": list(r.matched),
                    "fallback": r.fallback} for r in routes or []],
        "responses": responses,
        "mode": combined.get("mode") if combined else None,
        "rounds": combined.get("rounds") if combined else None,
    }).model_dump(mode="json", exclude=set() if combined and combined.get("rounds") else
                  {"mode", "rounds"}), record


def finish_reason(responses: list[dict[str, Any]]) -> str:
    """``cancelled`` when an answer was stopped (its client went away), ``length`` when one
    was cut at max_tokens, else ``stop``."""
    reasons = {r.get("finish_reason") for r in responses if not r.get("error")}
    return next((r.value for r in (FinishReason.CANCELLED, FinishReason.LENGTH)
                 if r.value in reasons), FinishReason.STOP.value)
