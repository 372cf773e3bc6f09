"""Grouping requests to the same agent into one worker task (batched decoding).

Requests that arrive together (a batch, parallel ``submit_message`` calls) for the same agent
wait at most ``linger_s`` (10 ms) for company, then go to a worker as one task of up to
``batch_size`` items, which the worker decodes together (:mod:`hpc_chat.llm.batched`). A single
interactive question pays the 10 ms and nothing else. Each request still gets its own result,
or its own error when only that item failed.

The items of a micro-batch start together, so its time limit is each request's limit
(``performance.timeout_seconds``). When it runs out (a worker stalled, or one answer is very
long), the batch is not retried as a whole: each request is sent again as its own task, with
its own limit and its own retries, so one slow answer does not fail the others.

A request with a stream of this process (:func:`hpc_chat.driver.token_hub.on_result`) is resolved
by its result as the worker finishes it, not when its micro-batch's last answer ends: a short
answer is not held behind a long one (a client waiting for it sends its next request sooner).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from hpc_chat.driver.executors.futures import pass_outcome
from hpc_chat.driver.token_hub import on_result
from hpc_chat.worker.retry import is_timeout
from hpc_chat.worker.tasks import chat_batch_task, chat_task


class RequestBatcher:
    def __init__(self, executor, batch_size: int, time_limit: float, linger_s: float = 0.01):
        self.executor, self.batch_size, self.time_limit = executor, batch_size, time_limit
        self.linger_s = linger_s
        self._pending: dict[str, list[tuple[dict, asyncio.Future]]] = {}
        self._agent: dict[str, tuple[dict, int]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.tasks_sent = 0
        self.requests_split = 0  # requests sent again alone after their micro-batch timed out

    def submit(self, agent_config: dict, message: str, context: dict,
               retry_attempts: int) -> asyncio.Future:
        """A future for this one request's result dict."""
        loop = asyncio.get_running_loop()
        name = agent_config["name"]
        fut = loop.create_future()
        on_result(context.get("stream"), lambda result: fut.done() or fut.set_result(result))
        self._agent[name] = (agent_config, retry_attempts)
        group = self._pending.setdefault(name, [])
        group.append(({"message": message, "context": context}, fut))
        if len(group) >= self.batch_size:
            self._flush(name)
        elif name not in self._timers:
            self._timers[name] = loop.call_later(self.linger_s, self._flush, name)
        return fut

    def _flush(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        group = self._pending.pop(name, [])
        if not group:
            return
        agent_config, retry_attempts = self._agent[name]
        self.tasks_sent += 1
        task = self.executor.submit(chat_batch_task, agent_config, [item for item, _ in group],
                                    n_seq=self.batch_size, time_limit=self.time_limit,
                                    retry_attempts=retry_attempts)
        task.add_done_callback(
            lambda t: self._deliver(t, group, agent_config, retry_attempts))

    def _deliver(self, task: asyncio.Future, group: list[tuple[dict, asyncio.Future]],
                 agent_config: dict, retry_attempts: int) -> None:
        if task.cancelled():
            for _, fut in group:
                fut.cancel()
            return
        exc = task.exception()
        if exc is not None and is_timeout(exc):
            # The micro-batch ran out of time (a stalled worker, or one long answer): each
            # request goes again on its own, with its own limit and its own retries.
            self.requests_split += len(group)
            for item, fut in group:
                if not fut.done():
                    single = self.executor.submit(chat_task, agent_config, item["message"],
                                                  item["context"], time_limit=self.time_limit,
                                                  retry_attempts=retry_attempts)
                    single.add_done_callback(partial(pass_outcome, target=fut))
            return
        results: list[Any] = [None] * len(group) if exc else task.result()
        for (_, fut), result in zip(group, results):
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def cancel_all(self) -> None:
        for name in list(self._timers):
            self._timers.pop(name).cancel()
        for group in self._pending.values():
            for _, fut in group:
                fut.cancel()
        self._pending.clear()
