"""The functions an executor runs on a worker: one request, or several decoded together.

Their arguments and results are plain data, so Parsl (or Globus Compute) ships them anywhere;
the model they load stays loaded in the worker process for the next task. ``time_limit`` is
``performance.timeout_seconds``, kept by the task itself (:mod:`hpc_chat.worker.time_limit`;
never Parsl's ``walltime``, whose exception can land anywhere); ``retry_attempts`` is read by
the retry handler from the task record.
"""

from __future__ import annotations

from hpc_chat.worker.chat import process_chat_batch, process_chat_message
from hpc_chat.worker.embed import process_embed
from hpc_chat.worker.time_limit import limited


def chat_task(agent_config: dict, message: str, context: dict, *,
              time_limit: float | None = None, retry_attempts: int = 0) -> dict:
    """What a worker runs for one agent."""
    with limited(time_limit):
        return process_chat_message(agent_config, message, context)


def chat_batch_task(agent_config: dict, items: list[dict], *, n_seq: int | None = None,
                    time_limit: float | None = None, retry_attempts: int = 0) -> list[dict]:
    """What a worker runs for several requests to one agent, decoded together."""
    with limited(time_limit):
        return process_chat_batch(agent_config, items, n_seq)


def embed_task(agent_config: dict, items: list, context: dict, *,
               time_limit: float | None = None, retry_attempts: int = 0) -> dict:
    """What a worker runs for one slice of an embedding request's inputs, in order. (Not
    named ``inputs``: Parsl reads an app's ``inputs`` as files it depends on.)"""
    with limited(time_limit):
        return process_embed(agent_config, items, context)
