"""One reply from several agents' answers (the rule is documented in docs/agents.md)."""

from __future__ import annotations

from hpc_chat.protocol.result import Usage


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
    usage = sum((Usage.of(r.get("usage") or {}) for r in good), Usage()).model_dump()
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
