"""How many workers a run whose messages are known can keep busy, so its pool starts no more.

A worker holds one task at a time, and a task carries one request or more, so a run never has
more tasks in flight than it has answers being made at once. On the ``local`` site the pool
starts four workers a core (eight on two cores), each a Python process importing Parsl: about
half a CPU-second each, spent while the node's engine loads its model on the same cores.
``make demo`` (four prompts, five answers) can use five of those eight; starting five took its
run from 13.6 s to 12.7 s on two cores (medians of three).

So ``hpc-chat batch``, ``ask`` and ``embed`` count, before anything starts, the most answers
their messages can have in flight together, and the pool starts at most that many workers a
node (never more than the site profile says). The count is an upper bound, so no request
waits for a worker it would have had:

* a message asked of named agents: one answer each (``--agents``, an OpenAI line's model);
* a routed message: the router's choice for its text, up to ``routing.max_agents``; in a
  collaboration mode, ``collaboration.agents`` when they are more (the later rounds ask the
  same agents again, or one aggregator, only after this round's answers are in);
* an embeddings line: one task per slice of its inputs.

Counting stops at :data:`MOST_COUNTED`, more workers than a node's pool runs in practice, so a
million-line batch is not routed twice. ``hpc-chat serve``, ``chat`` and the Python API do not
know their messages in advance and start the profile's workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hpc_chat.agents.routing import route

MOST_COUNTED = 4096


def answers_at_once(loaded, text: str, agents: Sequence[str] | None) -> int:
    """The most answers one message of ``loaded``'s workflow makes at once (module docstring)."""
    if agents:
        return len(agents)
    routed = route(text, loaded.agents, loaded.default_agent)
    cap = loaded.settings.routing.max_agents
    return max(len(routed[:cap] if cap else routed),
               len(loaded.settings.collaboration.agents or ()))


def workers_to_start(counts: Iterable[int]) -> int:
    """The sum of each message's :func:`answers_at_once`, counted up to :data:`MOST_COUNTED`
    (and at least 1)."""
    total = 0
    for n in counts:
        total += n
        if total >= MOST_COUNTED:
            return MOST_COUNTED
    return max(total, 1)
