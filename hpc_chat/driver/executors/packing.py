"""Parsl futures followed from asyncio, and hpc_chat's own tasks packed for the trip.

Parsl serializes a task's arguments and its result with dill, whose pickler is written in
Python. For corpus-sized batches of short answers that was a quarter of a worker's time and a
sixth of the driver's; the standard library's pickler (in C) does the same for plain data in a
fraction of it. So hpc_chat's own task functions go as :func:`hpc_chat.worker.tasks.packed_call`
with ``(fn, args)`` pickled here and their result pickled there: Parsl carries bytes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import pickle
from collections.abc import Callable

from hpc_chat.driver.executors.futures import pass_outcome


def packed(fn: Callable, args: tuple) -> bytes | None:
    """``(fn, args)`` pickled for :func:`~hpc_chat.worker.tasks.packed_call`, for hpc_chat's
    own task functions (their arguments are plain data); None for any other function, which
    Parsl ships itself (dill also carries what the standard pickler cannot, such as classes
    defined in ``__main__``)."""
    if not getattr(fn, "__module__", "").startswith("hpc_chat."):
        return None
    try:
        return pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None


def awaitable(fut, *, unpack: bool = False) -> asyncio.Future:
    """An asyncio future that follows a Parsl future (its result unpickled with ``unpack``).
    Cancelling it only stops the wait: a Parsl task cannot be cancelled
    (``asyncio.wrap_future`` would try, and Parsl raises), so it runs to its end and its
    result is dropped."""
    loop = asyncio.get_running_loop()
    out = loop.create_future()

    def on_done(done) -> None:  # in Parsl's thread
        if unpack and not done.cancelled() and done.exception() is None:
            done = _unpacked(done.result())
        try:
            loop.call_soon_threadsafe(pass_outcome, done, out)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    fut.add_done_callback(on_done)
    return out


def _unpacked(blob: bytes) -> concurrent.futures.Future:
    done: concurrent.futures.Future = concurrent.futures.Future()
    try:
        done.set_result(pickle.loads(blob))
    except Exception as exc:  # a result this process cannot read: that task's failure
        done.set_exception(exc)
    return done
