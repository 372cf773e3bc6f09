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
from array import array
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


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class PerformanceStats:
    """Thread-safe accumulator of :class:`RequestRecord` (kept as a :class:`Summary`, not
    as the records: a server's or a corpus batch's millions of requests cost 8 bytes each)."""

    totals: Summary = field(default_factory=lambda: Summary())
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self.totals.add(record)

    def summary(self) -> dict[str, Any]:
        with self._lock:  # a copy: the percentiles' sort does not hold the workers' adds
            totals = self.totals.copy()
        return totals.result()


class Summary:
    """The running statistics of requests: counts and sums, and one array of the successful
    requests' response times (8 bytes each) for the percentiles."""

    def __init__(self) -> None:
        self.total = self.model_loads = self.tokens = self.prompt_tokens = self.cached = 0
        self.first, self.last = math.inf, -math.inf
        self.latencies = array("d")
        self.agents: dict[str, int] = {}

    def copy(self) -> Summary:
        other = Summary()
        other.__dict__.update({**self.__dict__, "latencies": array("d", self.latencies),
                               "agents": dict(self.agents)})
        return other

    def add(self, r: RequestRecord) -> None:
        self.total += 1
        self.model_loads += r.model_loads
        self.first, self.last = min(self.first, r.start), max(self.last, r.end)
        if not r.ok:
            return
        self.latencies.append(r.latency)
        self.tokens += r.completion_tokens
        self.prompt_tokens += r.prompt_tokens
        self.cached += r.cached
        for a in r.agents:
            self.agents[a] = self.agents.get(a, 0) + 1

    def result(self) -> dict[str, Any]:
        latencies, ok = self.latencies, len(self.latencies)
        wall = self.last - self.first if self.total else 0.0
        return {
            "total_requests": self.total,
            "successful_requests": ok,
            "failed_requests": self.total - ok,
            "avg_response_time": sum(latencies) / ok if ok else 0.0,
            "min_response_time": min(latencies) if ok else 0.0,
            "max_response_time": max(latencies) if ok else 0.0,
            "p50_response_time": percentile(latencies, 50) if ok else 0.0,
            "p95_response_time": percentile(latencies, 95) if ok else 0.0,
            "throughput": ok / wall if wall > 0 else 0.0,
            "wall_time": wall,
            "completion_tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "tokens_per_s": self.tokens / wall if wall > 0 else 0.0,
            "cache_hits": self.cached,
            "model_loads": self.model_loads,
            "agent_answers": dict(self.agents),
        }


def summarize(records) -> dict[str, Any]:
    totals = Summary()
    for r in records:
        totals.add(r)
    return totals.result()
