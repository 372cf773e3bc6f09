"""Which failures are retried, and how each agent's retry_attempts maps onto Parsl's budget."""

import pytest
from parsl.app.errors import AppTimeout
from parsl.executors.high_throughput.errors import WorkerLost

from hpc_chat.errors import (
    ConfigError,
    GenerationError,
    ModelNotFoundError,
    PromptTooLongError,
    TaskTimeout,
)
from hpc_chat.worker.retry import is_retryable, make_retry_handler


@pytest.mark.parametrize("exc, retry", [
    (WorkerLost(1, "node7"), True),
    (GenerationError("llama.cpp failed"), True),
    (OSError("disk hiccup"), True),
    (ModelNotFoundError("no such model"), False),
    (ConfigError("bad agent"), False),
    (PromptTooLongError("too long"), False),
    (ValueError("the message is empty"), False),
    (AppTimeout(), True),  # a stalled worker answers on its next try
    (TaskTimeout("timed out after 4 s"), True),
])
def test_is_retryable(exc, retry):
    assert is_retryable(exc) is retry


def test_each_agent_gets_the_retries_it_asks_for():
    handler = make_retry_handler(budget=3)  # Config(retries=3): the largest retry_attempts
    lost = WorkerLost(1, "node7")
    assert handler(lost, {"kwargs": {"retry_attempts": 3}}) == 1.0   # 3 retries of cost 1
    assert handler(lost, {"kwargs": {"retry_attempts": 1}}) == 3.0   # 1 retry uses the budget
    assert handler(lost, {"kwargs": {"retry_attempts": 0}}) > 3      # none
    assert handler(PromptTooLongError("x"), {"kwargs": {"retry_attempts": 3}}) > 3
    assert (handler.failures, handler.hopeless) == (4, 2)


@pytest.mark.parametrize("timeout", [TaskTimeout("timed out after 4 s"), AppTimeout()])
def test_a_timed_out_micro_batch_is_left_to_the_batcher_a_single_request_is_retried(timeout):
    handler = make_retry_handler(budget=3)
    assert handler(timeout, {"kwargs": {"retry_attempts": 3}}) == 1.0
    # A micro-batch (n_seq in its kwargs) is not retried whole: the batcher resends each item.
    assert handler(timeout, {"kwargs": {"retry_attempts": 3, "n_seq": 8}}) > 3
    assert handler(WorkerLost(1, "n"), {"kwargs": {"retry_attempts": 3, "n_seq": 8}}) == 1.0
