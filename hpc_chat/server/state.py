"""What the server knows about itself: readiness, requests in flight, recent tokens, metrics.

Readiness follows the model, not just the workers: the server sends each agent's model a
one-token warm-up request; ``/health`` answers 200 once one has come back (a worker has its
model loaded), 503 before, with the stage (``queued``: the pilot job waits in the scheduler's
queue; ``starting``: workers are starting; ``loading``: a worker is loading the model). A
warm-up that fails is tried again; when the workers are gone (a pilot job ended), the server
is not ready until a new one has its model loaded.

The status asks the scheduler, so it is computed at most every few seconds, whoever asks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hpc_chat.driver.startup import run_scheduler
from hpc_chat.driver.token_hub import TokenHub
from hpc_chat.server.board import EngineBoard
from hpc_chat.server.web_login import WebLogin
from hpc_chat.sites.schedulers import SCHEDULERS, JobState, JobStatus

TOKENS_WINDOW_S = 60.0
STATUS_TTL_S = 3.0
WARM_RETRY_S = 10.0


class Metrics:
    """The Prometheus series (one registry per server, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("hpc_chat_requests", "Chat completion requests by outcome",
                                ["status"], registry=r)
        self.refused = Counter("hpc_chat_refused", "Requests refused before any work (a wrong "
                               "key, an unknown model, a bad body, a full queue) by HTTP status",
                               ["status"], registry=r)
        self.tokens = Counter("hpc_chat_tokens", "Tokens by kind", ["kind"], registry=r)
        self.latency = Histogram("hpc_chat_request_seconds", "Time to a whole answer",
                                 buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
                                 registry=r)
        self.first_token = Histogram("hpc_chat_first_token_seconds",
                                     "Time to the first streamed piece",
                                     buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
                                     registry=r)
        self.in_flight = Gauge("hpc_chat_requests_in_flight", "Requests being answered",
                               registry=r)
        self.workers = Gauge("hpc_chat_workers", "Connected Parsl workers", registry=r)
        self.blocks = Gauge("hpc_chat_blocks", "Parsl blocks (pilot jobs)", registry=r)
        self.ready = Gauge("hpc_chat_ready", "1 when a worker has its model loaded",
                           registry=r)
        self.batch_requests = Gauge("hpc_chat_batch_requests", "Requests of the Batch API's "
                                    "running batches by state (total, completed, failed)",
                                    ["state"], registry=r)
        self.batches_running = Gauge("hpc_chat_batches_running", "Batches being answered",
                                     registry=r)


@dataclass
class ServerState:
    workflow: Any
    key: str
    hub: TokenHub | None  # None: answers are not streamed (Globus Compute)
    max_queue: int = 256
    max_body: int = 1 << 20
    max_upload: int = 1 << 30  # bytes of a file uploaded for the Batch API
    store: Any = None  # the Batch API's files and batches (server/batch_store.py)
    batches: Any = None  # the runner of those batches (server/batch_runner.py)
    batches_elsewhere: str | None = None  # who runs them when another server does
    metrics: Metrics = field(default_factory=Metrics)
    login: WebLogin = field(default_factory=WebLogin)  # the browser's (server/web_login.py)
    board: EngineBoard = field(default_factory=EngineBoard)  # engines seen, tokens over time
    in_flight: int = 0
    ready: bool = False
    failed: str | None = None  # why the warm-up failed
    started: float = field(default_factory=time.time)
    _tokens: deque = field(default_factory=deque)  # (time, completion tokens)
    _states: dict[str, tuple[float, str]] = field(default_factory=dict)  # job -> (when, state)
    _status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def begin(self) -> None:
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)

    def end(self, status: str, result: dict | None, seconds: float) -> None:
        self.in_flight -= 1  # first: whatever fails below, the slot is free
        self.metrics.in_flight.set(self.in_flight)
        self.metrics.requests.labels(status).inc()
        self.metrics.latency.observe(seconds)
        if result and result.get("ok"):
            self.metrics.tokens.labels("prompt").inc(result.get("prompt_tokens") or 0)
            self.metrics.tokens.labels("completion").inc(result.get("completion_tokens") or 0)
            self._tokens.append((time.time(), result.get("completion_tokens") or 0))
            self.board.saw(result)

    def tokens_per_s(self) -> float:
        now = time.time()
        while self._tokens and self._tokens[0][0] < now - TOKENS_WINDOW_S:
            self._tokens.popleft()
        return round(sum(n for _, n in self._tokens) / TOKENS_WINDOW_S, 2)

    async def keep_warm(self) -> None:
        """Warm up until one agent's model answers; again whenever the workers are gone."""
        while True:
            if not self.ready:
                await self.warm_up()
            await asyncio.sleep(WARM_RETRY_S if not self.ready else 2.0)
            if self.ready and not (await self.workflow.get_parsl_stats()).get(
                    "active_workers", 1):
                self.ready = False
                self.metrics.ready.set(0)

    async def warm_up(self) -> None:
        """One token from each agent's model: ready when one has answered. Remote models
        are not warmed (their servers are up or not; a call costs there), and the warm-up is
        one plain answer whatever the workflow's collaboration mode."""
        wf = self.workflow
        agents = sorted(a for a in wf.agents if a not in wf.remote_models)
        if not agents:  # every agent's model runs elsewhere: nothing here to load
            self.ready, self.failed = True, None
            self.metrics.ready.set(1)
            return
        try:
            results = await asyncio.gather(*(
                wf.submit_request("Hi.", agents=[name],
                                  options={"max_tokens": 1, "mode": "route"})
                for name in agents))
        except Exception as exc:  # noqa: BLE001 - the reason goes to /v1/status
            self.failed = f"{type(exc).__name__}: {exc}"
            return
        if any(r["ok"] for r in results):
            self.ready, self.failed = True, None
            self.metrics.ready.set(1)
        else:
            self.failed = "; ".join(f"{name}: {r['error']}" for name, r in zip(agents, results))

    async def status(self) -> dict[str, Any]:
        """``GET /v1/status``: each block's scheduler state, workers, model, requests. The
        scheduler is asked about a job at most every ``STATUS_TTL_S``, whoever asks."""
        wf = self.workflow
        stats = await wf.get_parsl_stats()
        scheduler = run_scheduler(wf)
        jobs = stats.get("block_jobs") or {}  # block -> job (only Parsl's executor has them)
        connected = stats.get("by_block") or {}
        blocks = [{"job_id": job, "block": block, "scheduler": scheduler,
                   "state": await self._job_state(scheduler, job),
                   **connected.get(block, {"managers": 0, "workers": 0, "tasks": 0})}
                  for block, job in jobs.items()]
        queued = any(b["state"].state is JobState.PENDING for b in blocks)
        # the scheduler's words ("PENDING (Priority, expected start ...)") and the state alone
        blocks = [{**b, "state": str(b["state"]), "phase": b["state"].state.value}
                  for b in blocks]
        workers = stats.get("active_workers", 0)
        self.metrics.workers.set(workers)
        self.metrics.blocks.set(len(blocks))
        failures = stats.get("block_failures") or []
        if failures:
            self.failed = "the pilot job could not be submitted: " + "; ".join(failures)
        if self.ready:
            stage = "ready"
        elif self.failed:
            stage = "failed"
        elif workers:
            stage = "loading"
        elif queued:
            stage = "queued"
        else:
            stage = "starting"
        return {
            "state": stage, "error": None if self.ready else self.failed,
            "site": wf.profile.name if wf.profile is not None else None,
            "blocks": blocks, "workers": workers,
            "model": "ready" if self.ready else ("failed" if self.failed else "loading"),
            "requests": {"running": self.in_flight, "max_queue": self.max_queue,
                         "parsl_tasks_pending": stats.get("pending_tasks"),
                         "parsl_tasks_submitted": stats.get("submitted_tasks")},
            "tokens_per_s_last_minute": self.tokens_per_s(),
            "tokens_per_s_history": self.board.tokens_history(),
            "engines": self.board.engines(),
            "batches": self._batches(),
            "uptime_s": round(time.time() - self.started, 1),
        }

    def _batches(self) -> list[dict[str, Any]]:
        """The Batch API's running batches: counts, rate, time left (and their gauges)."""
        running = self.batches.status() if self.batches is not None else []
        self.metrics.batches_running.set(len(running))
        for key in ("total", "completed", "failed"):
            self.metrics.batch_requests.labels(key).set(sum(b[key] for b in running))
        return running

    async def _job_state(self, scheduler: str, job: str) -> JobStatus:
        if scheduler == "local":
            return SCHEDULERS["local"].status("RUNNING")
        from hpc_chat.sites.submit import pilot_state

        async with self._status_lock:
            known = self._states.get(job)
            if known is None or time.monotonic() - known[0] > STATUS_TTL_S:
                known = self._states[job] = (time.monotonic(),
                                             await asyncio.to_thread(pilot_state, scheduler,
                                                                     job))
            return known[1]
