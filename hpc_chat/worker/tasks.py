"""The functions an executor runs on a worker: one request, or several decoded together.

Their arguments and results are plain data, so Parsl (or Globus Compute) ships them anywhere;
the model they load stays loaded in the worker process for the next task. ``time_limit`` is
``performance.timeout_seconds``, kept by the task itself (:mod:`hpc_chat.worker.time_limit`;
never Parsl's ``walltime``, whose exception can land anywhere); ``retry_attempts`` is read by
the retry handler from the task record.
"""

from __future__ import annotations

import pickle

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


def packed_call(call: bytes, **kwargs) -> bytes:
    """``fn(*args, **kwargs)`` for ``call``, the pickle of ``(fn, args)``; its result pickled.

    How :class:`~hpc_chat.driver.executors.parsl.ParslExecutor` ships the functions above.
    Parsl serializes arguments and results with dill, whose pickler is written in Python: for a
    batch of short answers it cost a worker about a quarter of its time, and the driver a
    sixth of its. Packed here with the standard library's pickler (in C), Parsl carries bytes.
    The keyword arguments stay Parsl's to see (its retry handler reads ``retry_attempts``).
    """
    fn, args = pickle.loads(call)
    return pickle.dumps(fn(*args, **kwargs), protocol=pickle.HIGHEST_PROTOCOL)
