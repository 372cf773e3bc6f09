"""How many workers a run whose messages are known can keep busy, so its pool starts no more.

A worker holds one task at a time, and a task carries one request or more, so a run never has
more tasks in flight than it has answers being made at once. A pool starts the site's
``max_workers_per_node`` (else the workflow's ``executor.max_workers``, 8 for the packaged
one), at most ``cores / cores_per_worker`` (four a core on the ``local`` site: 8 on two
cores), each a Python process importing Parsl: about half a CPU-second each, spent while the
node's engine loads its model on the same cores. ``make demo`` (four prompts, five answers)
can use five of those eight; starting five took its run from 13.6 s to 12.7 s on two cores
(medians of three).

So ``hpc-chat batch``, ``ask`` and ``embed``, on Parsl workers, count before anything starts
the most answers their messages can have in flight together, and the pool starts at most that
many workers a node (never more than the profile says). The count is an upper bound, so a
request does not wait for a worker it would have had:

* a message asked of named agents: one answer each (``--agents``, an OpenAI line's model);
* a routed message: the router's choice for its text, up to ``routing.max_agents``; in a
  collaboration mode, ``collaboration.agents`` when they are more. A later round asks the same
  agents again, or one aggregator, once this round's answers are in: each answer comes back on
  its own stream as its worker sends it, so a later round's task may reach the pool a few
  milliseconds before the worker that sent the answer has returned its task, and waits that
  long;
* an agent whose model is served elsewhere (``openai:...``): none, the driver calls it;
* an embeddings line: one task per slice of its inputs (``hpc-chat embed``: at most its
  window of slices).

Counting stops at :data:`MOST_COUNTED`, more workers than a node's pool runs in practice, so a
million-line batch is not routed twice. ``hpc-chat serve``, ``chat`` and the Python API do not
know their messages in advance and start the profile's workers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from hpc_chat.agents.routing import route

MOST_COUNTED = 4096


def answers_at_once(loaded, text: str, agents: Sequence[str] | None,
                    remote: Collection[str] = ()) -> int:
    """The most answers one message of ``loaded``'s workflow makes at once on workers (module
    docstring); ``remote``: the agents whose models the driver calls itself."""
    def on_workers(names) -> int:
        return sum(name not in remote for name in names)
    if agents:
        return on_workers(agents)
    routed = route(text, loaded.agents, loaded.default_agent)
    cap = loaded.settings.routing.max_agents
    return max(on_workers(r.agent for r in (routed[:cap] if cap else routed)),
               on_workers(loaded.settings.collaboration.agents or ()))


def workers_to_start(counts: Iterable[int]) -> int:
    """The sum of each message's :func:`answers_at_once`, counted up to :data:`MOST_COUNTED`
    (and at least 1)."""
    total = 0
    for n in counts:
        total += n
        if total >= MOST_COUNTED:
            return MOST_COUNTED
    return max(total, 1)
