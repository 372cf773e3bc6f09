"""Which agents answer a message: keyword scores against each agent's delegation threshold.

The rule (documented in docs/agents.md):

* The message is lower-cased and split into words (runs of letters and digits).
* A one-word keyword matches when some word of the message *starts with* it
  (``imagine`` matches "imagine" and "imagined"). A keyword of several words matches when the
  message contains those words in a row, the last one again as a prefix.
* With ``h`` distinct keywords matched, the score is ``1 - 0.25**h``: 0 for none, 0.75 for one,
  0.94 for two, 0.98 for three. Each match closes three quarters of the remaining gap to 1.
* Every agent whose score is at least its ``delegation_threshold`` answers, best score first
  (ties keep the order of the workflow config). When none qualifies, the default agent answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from hpc_chat.agents.config import AgentConfig

_WORD = re.compile(r"[a-z0-9]+")
MISS_FACTOR = 0.25


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def keyword_hits(message: str, keywords: Sequence[str]) -> list[str]:
    """The keywords (as written in the config) that the message contains."""
    msg = words(message)
    hits = []
    for keyword in keywords:
        kw = words(keyword)
        if not kw:
            continue
        n = len(kw)
        for i in range(len(msg) - n + 1):
            if msg[i:i + n - 1] == kw[:-1] and msg[i + n - 1].startswith(kw[-1]):
                hits.append(keyword)
                break
    return hits


def keyword_score(message: str, keywords: Sequence[str]) -> float:
    return _score(keyword_hits(message, keywords))


def _score(matched: Sequence[str]) -> float:
    return 1.0 - MISS_FACTOR ** len(matched)


@dataclass(frozen=True)
class Route:
    """One agent chosen to answer, with why."""

    agent: str
    score: float
    matched: tuple[str, ...]
    fallback: bool = False


def route(message: str, agents: Sequence[AgentConfig], default_agent: str) -> list[Route]:
    """The agents that answer ``message``, best first; never empty."""
    chosen = []
    for order, agent in enumerate(agents):
        collab = agent.config.collaboration
        matched = keyword_hits(message, collab.specialization_keywords)
        score = _score(matched)
        if matched and score >= collab.delegation_threshold:
            chosen.append((-score, order, Route(agent.name, score, tuple(matched))))
    if not chosen:
        return [Route(default_agent, 0.0, (), fallback=True)]
    return [r for _, _, r in sorted(chosen)]
