"""``serve``: the OpenAI-compatible HTTP API in front of this command's workers."""

from __future__ import annotations

import signal
import socket
import sys

import click

from hpc_chat.cli.app import (
    Interrupted,
    Session,
    cli,
    err_console,
    model_option,
    raise_interrupted,
    site_options,
)


def with_site_options(fn):
    """The options that choose where workers run; requests bring their own sampling."""
    for option in reversed([*site_options, model_option]):
        fn = option(fn)
    return fn


@cli.command()
@with_site_options
@click.option("--host", default=None,
              help="Listen on TCP at this address (with --port, default 8000) instead of the "
                   "Unix socket only you can open. Any TCP port, loopback included, can be "
                   "reached by every user of this node: prefer the socket, through an SSH "
                   "tunnel from elsewhere (docs/openai-api.md).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Listen on TCP at this port (0: any free one), on --host or 127.0.0.1.")
@click.option("--max-queue", type=click.IntRange(1, 100000), default=256, show_default=True,
              help="Requests answered at once; more get 429 with Retry-After.")
@click.option("--max-upload-mb", type=click.IntRange(1, 1 << 20), default=1024,
              show_default=True,
              help="Largest file POST /v1/files takes for the Batch API (it is streamed to "
                   "$HPC_CHAT_HOME/batches, never held in memory).")
@click.option("--root-path", default="", metavar="PATH",
              help="The path the browser reaches this server under, behind a proxy that "
                   "strips it (Open OnDemand: /rnode/HOST/PORT): the login link and the "
                   "session cookie are for that path only.")
@click.option("--new-key", is_flag=True,
              help="Write a new API key to $HPC_CHAT_HOME/server/api-key first (the old one "
                   "stops working).")
def serve(config, site, endpoint, allocation, model, host, port, max_queue, max_upload_mb,
          root_path, new_key):
    """Serve the OpenAI API (/v1/models, /v1/chat/completions with streaming, /v1/files and
    /v1/batches: batches run on these workers and go on after a restart) and /health,
    /v1/status, /metrics, answered by this site's workers, and a chat page and a status page
    for a browser (/ and /status). Every API route needs 'Authorization: Bearer KEY':
    $HPC_CHAT_API_KEY, else the key file it names; a browser logs in once with the one-time
    link serve prints (also in $HPC_CHAT_HOME/server/login-url). Stop with Ctrl-C or
    SIGTERM: workers and pilot jobs end with it."""
    from hpc_chat.server.auth import load_key
    from hpc_chat.server.run import bind_socket, bind_unix
    from hpc_chat.server.web_login import WebLogin
    from hpc_chat.util.hosts import is_loopback

    key, source = load_key(new=new_key)  # there is always a key: a file is made if needed
    login = WebLogin(root_path)  # a bad --root-path or $HPC_CHAT_LOGIN_TOKEN stops here
    tcp = host is not None or port is not None
    if tcp:
        host = host or "127.0.0.1"
        port = 8000 if port is None else port
        err_console.print(f"note: listening on TCP {host}: every user who can reach "
                          f"{'this node' if is_loopback(host) else 'that address'} can "
                          f"connect (the API key still guards every route but /health); "
                          f"without --host/--port only you can reach the server",
                          markup=False, highlight=False)
    session = Session(config, site, allocation=allocation, endpoint=endpoint, model=model)
    session.check()
    # The socket is bound before any worker starts: a port in use fails at once.
    sock = bind_socket(host, port) if tcp else bind_unix()
    # uvicorn stops serving on SIGINT/SIGTERM, then raises the signal again: ours turns it
    # into an exception, so the workflow shuts down (workers, pilot jobs) before the exit.
    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        _serve(session, sock, key, source, max_queue, max_upload_mb << 20, login)
    except (Interrupted, KeyboardInterrupt):
        err_console.print("server stopped; workers and pilot jobs ended", markup=False)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(session, sock, key, source, max_queue, max_upload, login) -> None:
    from hpc_chat.server.run import serve as run_server
    from hpc_chat.server.web_login import login_file

    with session as s:
        where = s.workflow.profile.name if s.workflow.profile is not None else "local"

        def listening(url: str) -> None:
            err_console.print(f"serving the OpenAI API on {url} (site {where}); API key: "
                              f"{source}. GET /health answers 200 once a model is loaded.",
                              markup=False, highlight=False)
            if sock.family == socket.AF_UNIX:
                path = sock.getsockname()
                err_console.print(
                    f"the socket {path} is yours alone; hpc-chat ask/chat/batch use it. From "
                    f"elsewhere: ssh -N -L 8000:{path} {socket.gethostname()}, then "
                    f"http://127.0.0.1:8000/v1 on your side", markup=False, highlight=False)
            # The link is a login: shown on a terminal, never into a job's log (often
            # readable by others) nor when the caller chose the token (Open OnDemand).
            if sys.stderr.isatty() and not login.chosen:
                link = f"{login.link()} (once; the next one is in {login_file()})"
            else:
                link = f"the link in {login_file()} (0600; good once)"
            err_console.print(f"in a browser: {link}", markup=False, highlight=False)
        s.run(run_server(s.workflow, sock=sock, key=key, max_queue=max_queue,
                         max_upload=max_upload, on_listening=listening, login=login))
