"""One future's outcome passed on to another."""

from __future__ import annotations

import asyncio


def pass_outcome(source, target: asyncio.Future) -> None:
    """Give ``target`` the result, exception or cancellation of the finished ``source``
    (unless ``target`` already has an outcome: it was cancelled by its waiter)."""
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())
