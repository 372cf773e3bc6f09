"""Make a recorded answer again from its provenance, and say whether it came out the same.

Every batch output line records, per agent, the exact messages decoded, every sampler setting
with the seed, the request's own format (``request_format``: its ``response_format``,
``grammar``, ``tools``, ``tool_choice`` as sent) and the model file's sha256
(:mod:`hpc_chat.worker.provenance`). A replay sends those messages, settings and format to the
same agent and model, the way the workflow decodes them, and compares the sha256 of the new
answer and of the model file with the recorded ones.

What keeps an answer identical: the same model file, llama-cpp-python version and seed (a
request without one had one drawn and recorded). An answer decoded in a batch together with
other requests (``batched: true``) may differ in a few tokens when replayed alone: the
floating-point sums of a batch depend on what else is in it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hpc_chat.errors import InputError
from hpc_chat.openai.batch_output import is_output_line
from hpc_chat.structured.compile import FORMAT_KEYS


def find_answer(output: str, ident: str) -> dict[str, Any]:
    """The provenance of the last answer recorded for ``ident`` (an ``id`` or ``custom_id``)
    in a native or OpenAI batch output."""
    path = Path(output)
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"{output}: cannot read the output: {exc.strerror or exc}") from None
    found = None
    for raw in raw_lines:
        try:
            line = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if not isinstance(line, dict):
            continue
        if is_output_line(line) and line.get("custom_id") == ident:
            body = (line.get("response") or {}).get("body") or {}
            found = (body.get("choices") or [{}])[0].get("message", {}).get("content"), \
                body.get("hpc_chat")
        elif "id" in line and "ok" in line and str(line["id"]) == ident and line["ok"]:
            found = line.get("response"), line.get("provenance")
    if found is None:
        raise InputError(f"{output}: no answer recorded for id {ident!r}")
    answer, provenance = found
    agents = provenance.get("agents") if isinstance(provenance, dict) else None
    if not agents or not all(isinstance(a, dict) and a.get("messages") and a.get("sampling")
                             and isinstance(a.get("request_format") or {}, dict)
                             for a in agents):
        raise InputError(f"{output}: the answer to {ident!r} has no provenance to replay "
                         f"(written by an older hpc_chat, or a cache hit without one)")
    return {"answer": answer, **provenance}


def _sha256(text: Any) -> str:
    return hashlib.sha256(str(text).encode("utf-8", "replace")).hexdigest()


async def replay(workflow, recorded: dict[str, Any]) -> list[dict[str, Any]]:
    """Answer each recorded agent's messages again; per agent, what came out and whether the
    answer and the model file are the same."""
    outcomes = []
    for agent in recorded["agents"]:
        messages = agent["messages"]
        system = messages[0]["content"] if messages[0].get("role") == "system" else None
        turns = messages[1:-1] if system is not None else messages[:-1]
        options = {k: v for k, v in agent["sampling"].items() if v is not None}
        asked = agent.get("request_format") or {}  # the format the request itself asked for
        options.update({k: v for k, v in asked.items() if k in FORMAT_KEYS})
        options["mode"] = "route"  # this agent's answer alone, whatever the workflow's mode
        result = await workflow.submit_request(
            messages[-1]["content"], agents=[agent["agent"]], options=options,
            history=turns, system_prompt=system)
        now = (result.get("responses") or [{}])[0]
        prov = now.get("provenance") or {}
        outcomes.append({
            "agent": agent["agent"], "ok": result["ok"], "error": result.get("error"),
            "answer": result.get("response"),
            "same_answer": result["ok"] and
            _sha256(now.get("content")) == agent.get("answer_sha256"),
            "same_model": prov.get("model_sha256") == agent.get("model_sha256"),
            "model_sha256": prov.get("model_sha256"),
            "recorded_model_sha256": agent.get("model_sha256"),
            "batched": bool(agent.get("batched"))})
    return outcomes
