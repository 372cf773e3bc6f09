"""Which failed chat tasks Parsl should retry, and at what cost.

Parsl gives a config one retry budget (``Config.retries``) and asks a ``retry_handler`` what each
failure costs. The workflow sets the budget to the largest ``retry_attempts`` of its agents and
passes each task's own ``retry_attempts`` in its kwargs; a failure then costs
``budget / retry_attempts``, so every agent gets exactly the retries its YAML asks for.

Errors that cannot succeed on a second try (bad config, missing model, a prompt longer than the
context window, an empty message) cost the whole budget at once.

A timeout is retried: a worker that stalled (stopped, swapping, a slow file system) answers on
its next try. A micro-batch that timed out is not retried as a whole; the driver's batcher
sends each of its requests again on its own, with its own time limit and retries
(:mod:`hpc_chat.driver.executors.grouping`).
"""

from __future__ import annotations

from typing import Any

from hpc_chat.errors import ConfigError, PromptTooLongError, TaskTimeout

NOT_RETRYABLE = (ConfigError, PromptTooLongError, ValueError, TypeError)


def is_retryable(exc: BaseException) -> bool:
    inner = getattr(exc, "e_value", None) or exc  # Parsl may wrap the worker's exception
    return not isinstance(inner, NOT_RETRYABLE)


def is_timeout(exc: BaseException) -> bool:
    """A task past its limit: its own :class:`TaskTimeout`
    (:mod:`hpc_chat.worker.time_limit`), or Parsl's ``AppTimeout``, which hpc_chat no longer
    asks for (no ``walltime``) but a task of other code may raise."""
    from parsl.app.errors import AppTimeout

    return isinstance(getattr(exc, "e_value", None) or exc, (TaskTimeout, AppTimeout))


class RetryHandler:
    """A Parsl ``retry_handler`` for a config whose ``retries`` is ``budget``.

    It also counts what it decided (Parsl drops finished task records, so the workflow's
    statistics read these counters): ``failures`` seen, of which ``hopeless`` were not retried.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.failures = 0
        self.hopeless = 0

    def __call__(self, exc: BaseException, task_record: Any) -> float:
        self.failures += 1
        kwargs = task_record.get("kwargs") or {}
        attempts = kwargs.get("retry_attempts", self.budget)
        batch = "n_seq" in kwargs  # a micro-batch: its requests are retried one by one
        if not is_retryable(exc) or attempts <= 0 or (batch and is_timeout(exc)):
            self.hopeless += 1
            return float(self.budget + 1)
        return self.budget / attempts


def make_retry_handler(budget: int) -> RetryHandler:
    return RetryHandler(budget)
