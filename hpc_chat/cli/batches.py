"""``batches``: the Batch API's batches of a running ``hpc-chat serve``: list, show, cancel.

Batches are made with any OpenAI client (``client.batches.create``, docs/openai-api.md); these
commands read and cancel them through the same API, so they work against a server on another
node too (``--server URL``).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import click
from rich.table import Table
from rich.text import Text

from hpc_chat.cli.app import CliError, cli, console


def _server_option(fn):
    return click.option("--server", default=None, metavar="URL", envvar="HPC_CHAT_SERVER",
                        help="The server's /v1 URL (default: $HPC_CHAT_SERVER, else your "
                             "server on this host).")(fn)


def _url(server: str | None) -> str:
    from hpc_chat.client.http import running_server

    url = server or running_server()
    if not url:
        raise CliError("no server of yours runs on this host: start one with 'hpc-chat serve', "
                       "or give its URL (--server http://HOST:PORT/v1)")
    return url


def _call(server: str | None, path: str, body: dict | None = None) -> dict:
    from hpc_chat.client import http as client
    from hpc_chat.errors import HpcChatError

    try:
        return client.api(_url(server), path, body)
    except (ConnectionError, HpcChatError) as exc:
        raise CliError(str(exc)) from None


@cli.group()
def batches():
    """The Batch API's batches on a running server: list, show, cancel."""


@batches.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print OpenAI's list object.")
@_server_option
def list_batches(limit, as_json, server):
    """The newest batches first: status, counts, rate and time left."""
    page = _call(server, f"batches?limit={limit}")
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    table = Table("batch", "status", "done / total", "failed", "requests/s", "time left",
                  "created")
    for b in page["data"]:
        counts, live = b["request_counts"], b.get("hpc_chat") or {}
        eta = live.get("eta_s")
        table.add_row(Text(b["id"]), Text(b["status"]),
                      f"{counts['completed'] + counts['failed']} / {counts['total']}",
                      str(counts["failed"]), str(live.get("requests_per_s", "")),
                      f"{eta:.0f} s" if eta is not None else "",
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(b["created_at"])))
    console.print(table)
    if page.get("has_more"):
        console.print(f"(more: --limit {min(limit * 2, 100)})", highlight=False)


@batches.command("show")
@click.argument("batch_id")
@_server_option
def show_batch(batch_id, server):
    """One batch as OpenAI's Batch object (with hpc_chat's progress while it runs)."""
    click.echo(json.dumps(_call(server, f"batches/{quote(batch_id, safe='')}"), indent=2))


@batches.command("cancel")
@click.argument("batch_id")
@_server_option
def cancel_batch(batch_id, server):
    """Stop sending a batch's requests; those in flight finish, and every answer made stays
    in its output file."""
    record = _call(server, f"batches/{quote(batch_id, safe='')}/cancel", {})
    click.echo(f"{record['id']}: {record['status']}; it becomes cancelled once its requests "
               f"in flight are written")
