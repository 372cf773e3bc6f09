"""A micro-batch that runs out of time is resent request by request, whatever its size.

The executor here is a stand-in at the narrowest seam (``submit``): the batch task fails with
the task's own ``TaskTimeout``, as it does when a worker stalls (or Parsl's ``AppTimeout``,
which a Parsl ``walltime`` raises); the single tasks then answer. The
real stall, with real workers, is ``tests/integration/test_hardening.py``."""

from __future__ import annotations

import asyncio

import pytest
from parsl.app.errors import AppTimeout

from hpc_chat.driver.executors.grouping import RequestBatcher
from hpc_chat.errors import TaskTimeout
from hpc_chat.worker.tasks import chat_batch_task, chat_task


class TimingOutBatches:
    def __init__(self, timeout: Exception):
        self.calls, self.timeout = [], timeout

    def submit(self, fn, *args, **kwargs):
        self.calls.append(fn)
        fut = asyncio.get_running_loop().create_future()
        if fn is chat_batch_task:
            fut.set_exception(self.timeout)
        else:
            fut.set_result({"ok": True, "response": args[1]})
        return fut


@pytest.mark.parametrize("timeout", [TaskTimeout("timed out after 5 s"), AppTimeout("walltime")])
@pytest.mark.parametrize("requests", [1, 3])
def test_a_timed_out_micro_batch_is_resent_request_by_request(run, requests, timeout):
    executor = TimingOutBatches(timeout)

    async def go():
        batcher = RequestBatcher(executor, batch_size=4, time_limit=5.0)
        futures = [batcher.submit({"name": "a"}, f"q{i}", {}, retry_attempts=2)
                   for i in range(requests)]
        return await asyncio.gather(*futures), batcher.requests_split

    results, split = run(go())
    assert [r["response"] for r in results] == [f"q{i}" for i in range(requests)]
    assert split == requests
    assert executor.calls == [chat_batch_task] + [chat_task] * requests
