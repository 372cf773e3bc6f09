"""Running the server: the token hub, the app under uvicorn, the warm-up, and a clean end.

The server shares the command's event loop with the workflow (one driver process). uvicorn
handles SIGINT and SIGTERM by finishing the requests in flight and returning; the command then
shuts the workflow down, which stops the workers and cancels the pilot jobs (and if the
process is killed outright, the run ledger's watchdog does that). While it runs,
``$HPC_CHAT_HOME/server/server.json`` says where it listens, for clients of the same user.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
from pathlib import Path

import uvicorn

from hpc_chat.errors import ConfigError
from hpc_chat.paths import hpc_chat_home
from hpc_chat.server.app import create_app
from hpc_chat.server.state import ServerState
from hpc_chat.tokenstream import TokenHub

log = logging.getLogger(__name__)


def server_file() -> Path:
    return hpc_chat_home() / "server" / "server.json"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def stream_host(workflow) -> str:
    """Where workers reach the driver: the interchange's address, else loopback."""
    htex = getattr(workflow.executor, "htex", None)
    address = getattr(htex(), "address", None) if callable(htex) else None
    if not address or address in ("0.0.0.0", "*"):
        return "127.0.0.1"
    try:
        return socket.gethostbyname(address)
    except OSError:
        return "127.0.0.1"


async def serve(workflow, *, host: str, port: int, key: str, max_queue: int,
                on_listening=None) -> None:
    """Serve until SIGINT/SIGTERM. ``on_listening(url)`` is called once the port is open."""
    hub = TokenHub()
    await hub.start(stream_host(workflow))
    state = ServerState(workflow, key, hub, max_queue=max_queue)
    config = uvicorn.Config(create_app(state), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off", timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    warm = asyncio.ensure_future(state.warm_up())
    announce = asyncio.ensure_future(_announce(server, host, port, on_listening))
    try:
        await server.serve()
        if not server.started:
            raise ConfigError(f"cannot listen on {host}:{port} (in use, or not an address "
                              f"of this host); choose another --port or --host")
    finally:
        for task in (warm, announce):
            task.cancel()
        await hub.stop()
        server_file().unlink(missing_ok=True)


async def _announce(server: uvicorn.Server, host: str, port: int, on_listening) -> None:
    while not server.started:
        await asyncio.sleep(0.05)
    bound = port
    if port == 0 and server.servers:
        bound = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/v1"
    path = server_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "pid": os.getpid(),
                                "host": socket.gethostname()}))
    if on_listening is not None:
        on_listening(url)
