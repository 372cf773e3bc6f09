"""A workflow result's provenance record, as the batch writer and the server give it.

Each agent's record comes from the worker that made the answer
(:mod:`hpc_chat.worker.provenance`), with the messages the driver put back
(:func:`hpc_chat.worker.chat.decoded_messages`); this adds the site and the driver's host.
"""

from __future__ import annotations

import socket
from typing import Any


def provenance_of(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A result's provenance: the site and driver, and each agent's record from its worker
    (:mod:`hpc_chat.worker.provenance`). None for a line that never ran."""
    if result and "responses" not in result and "provenance" in result:
        return result["provenance"]  # an earlier output line, copied to a new line number
    if not result or not result.get("responses"):
        return None
    agents = [{"agent": r.get("agent"), "cached": bool(r.get("cached")),
               **(r.get("provenance") or {})}
              for r in result["responses"] if not r.get("error")]
    version = next((a.get("hpc_chat") for a in agents if a.get("hpc_chat")), None)
    return {"hpc_chat": version, "site": result.get("site"),
            "driver_host": socket.gethostname(), "agents": agents}
