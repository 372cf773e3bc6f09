"""Request statistics: what ``get_performance_stats`` and ``hpc-chat stats`` report.

Definitions (also in docs/user-guide.md):

* response time: from submitting a request (all its agent tasks) to its aggregated reply.
* throughput: successful requests per second of wall time, from the first submission to the
  last completion.
* tokens_per_s: completion tokens of successful requests per second of that same wall time.
* p50/p95: nearest-rank percentiles of the response times of successful requests.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    ok: bool
    start: float
    end: float
    completion_tokens: int = 0
    prompt_tokens: int = 0
    agents: tuple[str, ...] = ()
    cached: bool = False
    model_loads: int = 0
    retried: int = 0

    @property
    def latency(self) -> float:
        return self.end - self.start


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class PerformanceStats:
    """Thread-safe accumulator of :class:`RequestRecord`."""

    records: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            records = list(self.records)
        return summarize(records)


def summarize(records: list[RequestRecord]) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    latencies = [r.latency for r in ok]
    wall = (max(r.end for r in records) - min(r.start for r in records)) if records else 0.0
    tokens = sum(r.completion_tokens for r in ok)
    agent_counts: dict[str, int] = {}
    for r in ok:
        for a in r.agents:
            agent_counts[a] = agent_counts.get(a, 0) + 1
    return {
        "total_requests": len(records),
        "successful_requests": len(ok),
        "failed_requests": len(records) - len(ok),
        "avg_response_time": sum(latencies) / len(latencies) if latencies else 0.0,
        "min_response_time": min(latencies) if latencies else 0.0,
        "max_response_time": max(latencies) if latencies else 0.0,
        "p50_response_time": percentile(latencies, 50) if latencies else 0.0,
        "p95_response_time": percentile(latencies, 95) if latencies else 0.0,
        "throughput": len(ok) / wall if wall > 0 else 0.0,
        "wall_time": wall,
        "completion_tokens": tokens,
        "prompt_tokens": sum(r.prompt_tokens for r in ok),
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "cache_hits": sum(1 for r in ok if r.cached),
        "model_loads": sum(r.model_loads for r in records),
        "agent_answers": agent_counts,
    }
