"""Each generated token's log-probability and its likeliest alternatives, in OpenAI's shape.

They are read from the model's own logits for that step (``log_softmax`` of the row the token
was drawn from), before the sampler's penalties, temperature or grammar: the model's belief,
which is what classification by token probability and confidence filters need, and the same
whatever the sampling settings (vLLM's default; llama-server reports the sampler's
probabilities instead). An entry is ``{"token", "logprob", "bytes", "top_logprobs"}``, the
alternatives ``{"token", "logprob", "bytes"}``, likeliest first, as OpenAI's
``choices[].logprobs.content[]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

MAX_TOP = 20  # OpenAI's bound on top_logprobs


def entry(logits: np.ndarray, token: int, top: int,
          piece: Callable[[int], bytes]) -> dict[str, Any]:
    """The entry of ``token`` drawn from one row of ``logits`` (float32, the vocabulary's
    size), with the ``top`` likeliest tokens of that row."""
    row = logits.astype(np.float64, copy=False)
    peak = float(row.max())
    norm = peak + float(np.log(np.exp(row - peak).sum()))
    best: list[int] = []
    if top:
        part = np.argpartition(row, -top)[-top:]
        best = [int(t) for t in part[np.argsort(-row[part], kind="stable")]]
    return {**_token(token, float(row[token]) - norm, piece),
            "top_logprobs": [_token(t, float(row[t]) - norm, piece) for t in best]}


def within(entries: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The entries of the tokens that begin within the answer's first ``size`` bytes: not the
    end-of-generation token, nor those after a stop string cut the text."""
    kept, at = [], 0
    for e in entries:
        if at >= size:
            break
        kept.append(e)
        at += len(e["bytes"])
    return kept


def _token(token: int, logprob: float, piece: Callable[[int], bytes]) -> dict[str, Any]:
    raw = piece(token)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob,
            "bytes": list(raw)}
