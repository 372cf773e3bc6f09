"""What the status page shows of the nodes' engines and of the tokens over time, gathered
from the answers as they come back.

An engine is known by the answers it sends: each carries its host, pid, slots and how busy it
was as the answer ended (:class:`hpc_chat.protocol.engine.EngineLoad`), and the worker's Parsl
block. Asking the engines directly would need a task on each node, queued behind the very
work whose progress it should show. So an engine appears once it has answered (its model is
loaded), and its load is the one of its last answer, with the time of that answer; an engine
silent for ``FORGET_S`` is dropped (its block has ended, or it has nothing to do).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

FORGET_S = 600.0
BUCKET_S = 10  # tokens/s over time: one point per 10 s
BUCKETS = 180  # half an hour


class EngineBoard:
    def __init__(self) -> None:
        self._engines: dict[tuple[str, Any], dict[str, Any]] = {}
        self._buckets: deque[list[float]] = deque(maxlen=BUCKETS)  # [start, tokens]

    def saw(self, result: dict[str, Any] | None) -> None:
        """Note the engines and tokens of a finished request's answers (a cached answer
        says nothing of any engine now)."""
        now = time.time()
        for answer in (result or {}).get("responses") or []:
            if answer.get("error") or answer.get("cached"):
                continue
            worker = answer.get("worker") or {}
            engine = answer.get("engine") or {}
            load = answer.get("engine_load") or {}
            host = engine.get("host") or worker.get("host") or "?"
            key = (host, engine.get("pid") or f"worker {worker.get('pid')}")
            seen = self._engines.setdefault(key, {"answers": 0, "tokens": 0})
            seen.update({
                "host": host, "pid": engine.get("pid"),
                "kind": "node" if engine else "worker",
                "model": answer.get("model"), "block": worker.get("block"),
                "slots": engine.get("slots"), "running": load.get("running"),
                "waiting": load.get("waiting"), "cap": load.get("cap"),
                "last_answer": round(now, 1)})
            seen["answers"] += 1
            seen["tokens"] += (answer.get("usage") or {}).get("completion_tokens") or 0
        tokens = (result or {}).get("completion_tokens") or 0
        start = now - now % BUCKET_S
        if not self._buckets or self._buckets[-1][0] != start:
            self._buckets.append([start, 0])
        self._buckets[-1][1] += tokens

    def cap(self) -> int | None:
        """The fewest sequences a node engine said it admits now (its slot cap, which grows
        from 8 towards the site's ``engine_slots`` only while requests wait and that pays), or
        None before any said: the Batch API's window follows it, so that an interactive
        request waits behind at most one micro-batch whatever the engine settled on."""
        caps = [e["cap"] for e in self.engines() if e["kind"] == "node" and e.get("cap")]
        return min(caps) if caps else None

    def engines(self) -> list[dict[str, Any]]:
        now = time.time()
        for key in [k for k, e in self._engines.items() if now - e["last_answer"] > FORGET_S]:
            del self._engines[key]
        return sorted(self._engines.values(), key=lambda e: (e["host"], str(e["pid"])))

    def tokens_history(self) -> list[list[float]]:
        """``[start, tokens/s]`` per ``BUCKET_S`` over the last half hour, gaps as zeros, up
        to the bucket now filling."""
        if not self._buckets:
            return []
        now = time.time()
        counts = {start: tokens for start, tokens in self._buckets}
        last = now - now % BUCKET_S
        first = max(self._buckets[0][0], last - (BUCKETS - 1) * BUCKET_S)
        points, t = [], first
        while t <= last:
            points.append([t, round(counts.get(t, 0) / BUCKET_S, 2)])
            t += BUCKET_S
        return points
