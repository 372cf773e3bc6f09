"""Ending a ``multiprocessing.connection`` connection under threads blocked on it.

Closing a descriptor does not wake a thread blocked reading or writing it on Linux; shutting
the socket down does. Both halves of the node engine's protocol need that: a worker whose
orders are stuck in a full buffer (``worker.engine_client``), an engine whose writer is stuck
on a worker that reads nothing (``worker.node_engine``).
"""

from __future__ import annotations

import os
import socket
from multiprocessing.connection import Connection


def shut_both_ways(conn: Connection) -> None:
    """End ``conn`` both ways: the reads and writes of every thread blocked on it fail at
    once. A connection already closed is left as it is."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
