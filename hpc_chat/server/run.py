"""Running the server: the token hub, the app under uvicorn, the warm-up, and a clean end.

The server shares the command's event loop with the workflow (one driver process). uvicorn
handles SIGINT and SIGTERM by finishing the requests in flight and returning; the command then
shuts the workflow down, which stops the workers and cancels the pilot jobs (and if the
process is killed outright, the run ledger's watchdog does that). While it runs,
``$HPC_CHAT_HOME/server/server.json`` says where it listens, for clients of the same user.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import urllib.parse
from pathlib import Path

import uvicorn

from hpc_chat.client.files import server_file
from hpc_chat.driver.result_streams import stream_addresses
from hpc_chat.driver.token_hub import TokenHub
from hpc_chat.errors import ConfigError
from hpc_chat.server.app import create_app
from hpc_chat.server.batch_runner import BatchRunner
from hpc_chat.server.batch_store import BatchStore
from hpc_chat.server.connections import BoundedH11Protocol
from hpc_chat.server.state import ServerState
from hpc_chat.server.web_login import WebLogin
from hpc_chat.util.rundir import runtime_dir

log = logging.getLogger(__name__)

CONNECTIONS_OVER_QUEUE = 64  # connections beyond --max-queue: health checks, status, refusals
KEEP_ALIVE_S = 5  # an idle connection is closed after this
TUNNEL_PORT = 8000  # the local port of the SSH tunnel serve suggests for its Unix socket


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, opened before any worker starts: a port in use fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose "
                          f"another --port (0: any free one) or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_unix() -> socket.socket:
    """A Unix socket in this user's runtime directory (0700, :mod:`hpc_chat.util.rundir`), mode
    0600: only this user can connect, whatever listens on TCP."""
    path = runtime_dir() / f"serve-{socket.gethostname().split('.')[0][:24]}-{os.getpid()}.sock"
    path.unlink(missing_ok=True)  # a dead server's, with this PID: the directory is ours
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def unix_url(path: str) -> str:
    """The URL of a server on a Unix socket, as requests-unixsocket writes it."""
    return f"http+unix://{urllib.parse.quote(path, safe='')}/v1"


async def serve(workflow, *, sock: socket.socket, key: str, max_queue: int,
                max_upload: int = 1 << 30, on_listening=None,
                login: WebLogin | None = None) -> None:
    """Serve on ``sock`` until SIGINT/SIGTERM. ``on_listening(url)`` is called once it
    serves (the browser's login link is written by then). Batches of the Batch API left
    unfinished by an earlier server go on."""
    hub = TokenHub()
    where = stream_addresses(workflow)
    if where is not None:
        await hub.start(*where)
    state = ServerState(workflow, key, hub if where is not None else None,
                        max_queue=max_queue, max_upload=max_upload, store=BatchStore(),
                        login=login or WebLogin())
    state.batches_elsewhere = state.store.take_lock()
    if state.batches_elsewhere is None:
        state.batches = BatchRunner(state.store, state)
        state.batches.start()
    else:
        log.warning("the Batch API is off on this server: %s runs this home's batches",
                    state.batches_elsewhere)
    # Bounded connections (a TCP port is open to every user of the node): requests beyond
    # the queue are refused at once by the app, connections beyond this by uvicorn (503);
    # connections that send no request are pushed out (server/connections.py).
    config = uvicorn.Config(create_app(state), log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=30,
                            limit_concurrency=max_queue + CONNECTIONS_OVER_QUEUE,
                            timeout_keep_alive=KEEP_ALIVE_S, http=BoundedH11Protocol)
    server = uvicorn.Server(config)
    unix_path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    warm = asyncio.ensure_future(state.keep_warm())
    announce = asyncio.ensure_future(_announce(server, sock, state.login, on_listening))
    try:
        await server.serve(sockets=[sock])
    finally:
        for task in (warm, announce):
            task.cancel()
        if state.batches is not None:
            await state.batches.stop()
        state.store.close()
        await hub.stop()
        _forget(server_file())
        if unix_path:  # (uvicorn has closed the socket by now)
            Path(unix_path).unlink(missing_ok=True)


def _forget(path: Path) -> None:
    """Remove the server file if it is this server's (another may have started since)."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


async def _announce(server: uvicorn.Server, sock: socket.socket, login: WebLogin,
                    on_listening) -> None:
    while not server.started:
        await asyncio.sleep(0.05)
    if sock.family == socket.AF_UNIX:
        url = unix_url(sock.getsockname())
        base = f"http://127.0.0.1:{TUNNEL_PORT}"  # through the tunnel serve prints
    else:
        host, port = sock.getsockname()[:2]
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/v1"
        page = socket.gethostname() if host in ("0.0.0.0", "::") else host
        base = f"http://{page if ':' not in page else f'[{page}]'}:{port}"
    # Behind a proxy (--root-path) only the proxy's host is the browser's: the path alone.
    try:
        login.write_link("" if login.root_path else base)
    except OSError as exc:  # the API works without it; the pages need a new start
        log.warning("could not write the browser's login link: %s", exc)
    path = server_file()
    path.write_text(json.dumps({"url": url, "pid": os.getpid(),
                                "host": socket.gethostname()}))
    if on_listening is not None:
        on_listening(url)
