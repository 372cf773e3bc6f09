"""Where workers reach this driver's token hub, and the result-only streams a workflow opens
for its own requests.

A micro-batch's results come back through Parsl together, when its longest answer ends
(:mod:`hpc_chat.driver.executors.grouping`). A request with a stream of this process is
resolved by its own result as soon as its worker sends it. The server gives every request such
a stream; a workflow gives one to each request of a collaboration round
(:mod:`hpc_chat.driver.collaborate`), so a prompt goes on to its next round when its own
answers are done, not when the slowest prompt's in the same micro-batch are.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from hpc_chat.driver.token_hub import Stream, TokenHub
from hpc_chat.util.hosts import is_loopback

log = logging.getLogger(__name__)


def stream_addresses(workflow) -> tuple[str, list[str]] | None:
    """Where the token hub listens and which addresses workers try, in order: the
    interchange's address when the profile sets one, else every address of this host (as
    Parsl gives its workers); None for Globus Compute (its workers are reached through the
    cloud, not directly)."""
    if workflow.endpoint or workflow.loaded.settings.executor.is_globus:
        return None
    htex = workflow.executor.htex()
    if htex is None:
        return "127.0.0.1", ["127.0.0.1"]  # threads of this process
    if getattr(htex, "address", None):
        try:
            bind = socket.gethostbyname(htex.address)
        except OSError:
            bind = "0.0.0.0"
        return bind, [htex.address]
    addresses = sorted(getattr(htex, "all_addresses", None) or [], key=lambda a: a != "127.0.0.1")
    if workflow.executor.scheduler != "local" or workflow.allocation:
        # Pilot jobs, or an allocation's other nodes: their loopback is not this one (and may
        # be another user's listener: the pinned certificate would refuse it, but never offer
        # it; each try there would cost the stream a handshake timeout).
        addresses = [a for a in addresses if not is_loopback(a)]
    return "0.0.0.0", [*addresses] or ["127.0.0.1"]


class ResultStreams:
    """A token hub started at the first :meth:`open` (none where workers cannot reach this
    process: Globus Compute, or no micro-batches to wait on)."""

    def __init__(self, workflow):
        self.workflow = workflow
        self.hub: TokenHub | None = None
        self._starting: asyncio.Lock | None = None
        self._unused = False

    async def open(self) -> tuple[Stream, dict] | None:
        if self._unused:
            return None
        if self.hub is None:
            self._starting = self._starting or asyncio.Lock()
            async with self._starting:
                if self.hub is None and not self._unused:
                    where = stream_addresses(self.workflow) \
                        if self.workflow.batcher is not None else None
                    if where is None:
                        self._unused = True
                        return None
                    hub = TokenHub()
                    try:
                        await hub.start(*where)
                    except OSError as exc:  # no port to listen on: answers come back with
                        # their micro-batch instead (slower, never lost)
                        log.warning("no result streams for collaboration rounds (%s): each "
                                    "round waits for its micro-batch", exc)
                        self._unused = True
                        return None
                    self.hub = hub
        return self.hub.open(tokens=False)

    def close(self, stream: Stream) -> None:
        if self.hub is not None:
            self.hub.close(stream)

    async def stop(self) -> None:
        if self.hub is not None:
            await self.hub.stop()
            self.hub = None
