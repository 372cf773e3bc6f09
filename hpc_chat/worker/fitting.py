"""A request's messages fitted to the model's context window, measured with the model's own
tokenizer (the driver only estimates: :mod:`hpc_chat.driver.history`)."""

from __future__ import annotations

import json
from typing import Any

from hpc_chat.protocol.request import GenRequest, prompt_too_long
from hpc_chat.structured.tools import turn_text

# Tokens kept free for the chat template's own markup around each message.
TEMPLATE_OVERHEAD_PER_MESSAGE = 8


def fit_to_context(messages: list[dict[str, Any]], count_tokens, n_ctx: int,
                   max_tokens: int, *, drop_history: bool = True,
                   extra_tokens: int = 0) -> list[dict[str, Any]]:
    """Drop the oldest history turns until the prompt (with ``extra_tokens``: the tools the
    template lists) and ``max_tokens`` fit in ``n_ctx``.

    The system prompt and the new message are never dropped or cut: when they alone do not fit,
    the request fails with :class:`PromptTooLongError` (retrying would not help). Messages a
    caller gave whole (an OpenAI request, a replay) are never shortened either
    (``drop_history=False``): they fit, or the request fails. A call's results go with the
    call: no ``role: tool`` turn is left without the turn that made its call.
    """
    def size(msgs):
        return extra_tokens + sum(count_tokens(turn_text(m)) + TEMPLATE_OVERHEAD_PER_MESSAGE
                                  for m in msgs)

    budget = n_ctx - max_tokens
    msgs = list(messages)
    while drop_history and size(msgs) > budget and len(msgs) > 2:
        del msgs[1]
        while len(msgs) > 2 and msgs[1].get("role") == "tool":  # results of a dropped call
            del msgs[1]
    if size(msgs) > budget:
        raise prompt_too_long(size(msgs), max_tokens, n_ctx, estimate=True)
    return msgs


def fit(count_tokens, n_ctx: int, req: GenRequest, exact: bool) -> GenRequest:
    """The request with its messages fitted to the context window (:func:`fit_to_context`)."""
    tools = count_tokens(json.dumps(req.tools)) + TEMPLATE_OVERHEAD_PER_MESSAGE \
        if req.tools else 0
    msgs = fit_to_context(req.messages, count_tokens, n_ctx, req.max_tokens,
                          drop_history=not exact, extra_tokens=tools)
    return req.model_copy(update={"messages": msgs})
