"""Parsl app wrappers around the pure logic.

``parsl_chat_app`` and ``parsl_aggregate_app`` are the seed's apps, bound to the global Parsl
DataFlowKernel (``parsl.load``). The workflow does not use the global kernel: its
:class:`~hpc_chat.core.executor.ParslExecutor` wraps :func:`chat_task` in an app bound to a kernel
it owns, so several workflows can live in one process.
"""

from __future__ import annotations

from parsl import python_app

from hpc_chat.apps.logic import aggregate_responses, process_chat_batch, process_chat_message


def chat_task(agent_config: dict, message: str, context: dict, *, walltime: float | None = None,
              retry_attempts: int = 0) -> dict:
    """What a worker runs for one agent. ``walltime`` is applied by Parsl (AppTimeout);
    ``retry_attempts`` is read by the retry handler from the task record."""
    return process_chat_message(agent_config, message, context)


def chat_batch_task(agent_config: dict, items: list[dict], *, n_seq: int | None = None,
                    walltime: float | None = None, retry_attempts: int = 0) -> list[dict]:
    """What a worker runs for several requests to one agent, decoded together."""
    return process_chat_batch(agent_config, items, n_seq)


@python_app
def parsl_chat_app(agent_config, message, context):
    """Parsl app wrapper for chat message processing."""
    return process_chat_message(agent_config, message, context)


@python_app
def parsl_aggregate_app(responses):
    """Parsl app for aggregating multiple agent responses."""
    return aggregate_responses(responses)
