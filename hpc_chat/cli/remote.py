"""``ask``, ``chat`` and ``batch`` through a running ``hpc-chat serve``: warm workers, no
start-up, as the ``ollama`` CLI talks to its daemon.

A command uses the server named by ``--server URL`` (refused beside an option that asks for
workers of its own). Otherwise it uses ``$HPC_CHAT_SERVER`` or the user's own server on this
host (:func:`hpc_chat.client.http.running_server`) when it asks for nothing a server cannot
give: no ``--site``, ``--config``, ``--endpoint``, ``--in-allocation`` or ``--model`` (workers
of its own, elsewhere or of another kind), not several ``--agents`` (a server answers one
agent, or the routed ``auto``), and not inside a batch job (a job's commands run on the job's
own allocation). ``--server off`` never uses one. Either way the command says which it did; a
server only found that cannot be reached is passed over with a note, a named one is an error.
Answers are streamed, so Ctrl-C stops one at the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import click
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hpc_chat.cli.app import CliError, console, err_console, option_source
from hpc_chat.client import http as client
from hpc_chat.openai.batch import body_fields

REFRESH_PER_S = 12


def own_worker_options(config, site, endpoint, allocation, model, names) -> list[str]:
    """The options given that ask for workers a server cannot stand in for."""
    given = [("config", "--config", config), ("site", "--site", site),
             ("endpoint", "--endpoint", endpoint), ("allocation", "--in-allocation", allocation),
             ("model", "--model", model)]
    chosen = [option_source(param, flag) for param, flag, value in given if value]
    if names and len(names) > 1:
        chosen.append("several --agents")
    return chosen


def choose_server(server: str | None, own: list[str]) -> tuple[str | None, bool]:
    """The server URL to use (None: start workers of its own), and whether it was named on
    the command line. ``own``: :func:`own_worker_options`. ``$HPC_CHAT_SERVER`` counts as a
    server found, not named: a job's commands and commands with workers of their own pass it
    over."""
    if server == "off":
        return None, False
    named = server not in (None, "", "auto")
    if named and option_source("server", "--server") == "--server":
        if own:
            raise CliError(f"--server sends the requests to that server's workers; it cannot "
                           f"be combined with {', '.join(own)} (which start workers of the "
                           f"command's own): drop one")
        return server, True
    if own or os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID"):
        return None, False
    return (server if named else client.running_server()), False


def reachable_models(url: str, explicit: bool) -> list[str] | None:
    """The server's model ids; None (with a note) when a server that was only found cannot
    be reached: the command starts workers of its own."""
    try:
        return [m["id"] for m in client.models(url)]
    except ConnectionError as exc:
        if explicit:
            raise CliError(str(exc)) from None
        err_console.print(f"{exc}; starting workers of its own", markup=False)
        return None
    except client.ServerError as exc:
        raise CliError(str(exc)) from None


@dataclass
class Target:
    """The server a command uses: its URL, its model ids, and the model a request without
    one of its own asks for (the one ``--agents`` name, else ``auto``)."""

    url: str
    models: list[str]
    model: str


def server_to_use(server: str | None, names: list[str] | None, config, site, endpoint,
                  allocation, model) -> Target | None:
    """The server ``ask``, ``chat`` or ``batch`` sends its requests to, or None: it starts
    workers of its own (see the module's docstring)."""
    url, explicit = choose_server(server, own_worker_options(config, site, endpoint,
                                                             allocation, model, names))
    models = reachable_models(url, explicit) if url else None
    if models is None:
        return None
    return Target(url, models, one_agent(names, models, url))


def one_agent(names: list[str] | None, models: list[str], url: str) -> str:
    """The model id a request asks for: the one agent named, else ``auto`` (routed)."""
    model = names[0] if names else "auto"
    if model not in models:
        raise CliError(f"the server at {url} has no agent {model!r}; its models are: "
                       f"{', '.join(models)}")
    return model


class Failed(CliError):
    """The server could not answer this request (exit 1, as when workers of the command's
    own fail to answer it)."""

    exit_code = 1

    def show(self, file=None) -> None:
        err_console.print(f"[bold red]failed:[/] {escape(self.format_message())}",
                          highlight=False, soft_wrap=True)


def request_body(model: str, prompt: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}],
            **body_fields(options)}


def streamed_answer(url: str, body: dict[str, Any], conversation: str | None, *,
                    live: bool) -> dict[str, Any]:
    """One answer from the server, streamed (Ctrl-C closes the connection, which stops the
    answer at the server): ``text``, ``finish_reason``, ``usage``, ``agents``, ``latency_s``.
    ``live``: drawn in a transient panel as it grows, and a spinner while the server's
    workers are not ready. The server's refusal is :class:`Failed`; a wrong key or a server
    that cannot be reached, :class:`CliError`."""
    start = time.monotonic()
    try:
        with contextlib.nullcontext() if not live else \
                err_console.status("waiting for the server") as spinner:
            chunks = client.until_ready(url, lambda: client.stream(url, body, conversation),
                                        on_wait=spinner.update if spinner else None)
        try:
            return _collect(chunks, body["model"], live, start)
        finally:  # at once, also on Ctrl-C: the server stops the answer at its next token
            chunks.close()
    except client.ServerError as exc:
        if exc.status == 401:
            raise CliError(str(exc)) from None
        raise Failed(str(exc)) from None
    except ConnectionError as exc:
        raise CliError(f"{exc} (--server off starts workers of this command's own)") from None


def completion(url: str, body: dict[str, Any], conversation: str | None) -> dict[str, Any]:
    """The server's whole ``chat.completion`` (``ask --json``), waiting as :func:`answer`
    does."""
    try:
        return client.until_ready(url, lambda: client.complete(url, body, conversation))
    except client.ServerError as exc:
        if exc.status == 401:
            raise CliError(str(exc)) from None
        raise Failed(str(exc)) from None
    except ConnectionError as exc:
        raise CliError(str(exc)) from None


def _collect(chunks, model: str, live: bool, start: float) -> dict[str, Any]:
    text, finish, usage, provenance = "", None, {}, None
    title = Text(model)
    with contextlib.nullcontext() if not live else \
            Live(Panel(Text("…"), title=title, title_align="left"), console=console,
                 transient=True, auto_refresh=False) as panel:
        drawn = 0.0
        for chunk in chunks:
            usage = chunk.get("usage") or usage
            provenance = chunk.get("hpc_chat") or provenance
            for choice in chunk.get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
            if panel is not None and time.monotonic() - drawn >= 1 / REFRESH_PER_S:
                drawn = time.monotonic()  # at most 12 frames a second: a slow ssh link
                panel.update(Panel(Text(text or "…"), title=title, title_align="left"),
                             refresh=True)
    return _answered(text, finish, usage, provenance, start)


def _answered(text, finish, usage, provenance, start) -> dict[str, Any]:
    agents = [a.get("agent") for a in (provenance or {}).get("agents") or []]
    return {"text": text, "finish_reason": finish or "stop", "usage": usage or {},
            "agents": [a for a in agents if a], "latency_s": time.monotonic() - start}


def print_answer(url: str, done: dict[str, Any], *, raw: bool) -> None:
    """The answer on stdout; who answered, where, how long and how many tokens on stderr."""
    click.echo(done["text"])
    if raw:
        return
    note = " (stopped at the max_tokens limit; raise it with --max-tokens)" \
        if done["finish_reason"] == "length" else ""
    err_console.print(f"answered by the server at {url}: {', '.join(done['agents']) or '?'}, "
                      f"{done['latency_s']:.2f} s, "
                      f"{done['usage'].get('completion_tokens', 0)} tokens{note}",
                      markup=False, highlight=False)


def print_models(url: str) -> None:
    table = Table("model", "runs", "description", title=Text(f"the server at {url}"))
    try:
        listing = client.models(url)
    except (ConnectionError, client.ServerError) as exc:
        raise CliError(str(exc)) from None
    for m in listing:
        extra = m.get("hpc_chat") or {}
        table.add_row(Text(m["id"]), Text(str(extra.get("runs", ""))),
                      Text(str(extra.get("description", ""))))
    console.print(table)


def print_server_status(url: str, as_json: bool = False) -> None:
    """``hpc-chat status --server`` and ``/stats`` in a chat through a server."""
    try:
        state = client.server_status(url)
    except (ConnectionError, client.ServerError) as exc:
        raise CliError(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"url": url, **state}, indent=2))
        return
    requests = state.get("requests") or {}
    table = Table("server", "site", "state", "workers", "model", "running", "tokens/s (1 min)")
    table.add_row(Text(url), Text(str(state.get("site"))), Text(state["state"]),
                  str(state.get("workers")), Text(str(state.get("model"))),
                  str(requests.get("running")), f"{state.get('tokens_per_s_last_minute', 0):.1f}")
    console.print(table)
    if state.get("blocks"):
        blocks = Table("pilot job", "scheduler", "state")
        for block in state["blocks"]:
            blocks.add_row(Text(block["job_id"]), Text(block["scheduler"]), Text(block["state"]))
        console.print(blocks)
    if state.get("error"):
        err_console.print(f"[red]error:[/] {escape(state['error'])}", highlight=False)


def chat_loop(url: str, name: str, model: str, options: dict[str, Any],
              show_history) -> None:
    """``hpc-chat chat`` through a server: the server keeps the turns under ``name``, as
    ``--conversation`` does locally. Ctrl-C during an answer closes its connection, which
    stops it at the server (its slot is freed at the next token)."""
    from hpc_chat.cli.repl import repl

    console.print(Text.assemble(("hpc-chat", "bold"), " conversation ", (name, "cyan"),
                                f" with {model} on the server at {url}. /quit to end."))

    def history() -> None:
        show_history(name)
        if client.running_server() != url:
            err_console.print(f"(the history of this host; the server at {url} keeps the "
                              f"turns in its own)", markup=False, highlight=False)

    repl({"/stats": lambda: print_server_status(url), "/agents": lambda: print_models(url),
          "/history": history},
         lambda line: print_answer(url, streamed_answer(
             url, request_body(model, line, options), name, live=console.is_terminal),
             raw=False))
