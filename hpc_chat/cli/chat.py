"""Interactive commands: ``ask``, ``chat`` and ``history``."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click
from rich.table import Table

from hpc_chat.cli.app import (
    CliError,
    Session,
    agents_list,
    cli,
    console,
    generation_options,
    with_common,
)
from hpc_chat.cli.output import print_agents, print_conversation, print_result, print_stats


@cli.command()
@click.argument("question")
@with_common
@click.option("--conversation", default=None, metavar="NAME",
              help="Store the exchange in this conversation; later turns see it.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def ask(question, config, site, endpoint, allocation, agents, seed, max_tokens, model,
        conversation, as_json):
    """Ask one question; the routed agents answer in parallel."""
    with Session(config, site, quiet=as_json, allocation=allocation, endpoint=endpoint,
                 wait_for_workers=True, model=model) as s:
        result = s.run(s.workflow.process_request(question, conversation_id=conversation,
                                                 agents=agents_list(agents),
                                                 options=generation_options(seed, max_tokens)))
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print_result(result)
    sys.exit(0 if result["ok"] else 1)


@cli.command()
@with_common
@click.option("--conversation", default=None, metavar="NAME",
              help="Conversation to continue (default: a new one named by the time).")
def chat(config, site, endpoint, allocation, agents, seed, max_tokens, model, conversation):
    """Interactive chat. Commands: /stats /agents /history /quit (Ctrl-D or Ctrl-C to end)."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    name = conversation or time.strftime("chat-%Y%m%d-%H%M%S")
    with Session(config, site, allocation=allocation, endpoint=endpoint,
                 wait_for_workers=True, model=model) as s:
        console.print(f"[bold]hpc-chat[/] conversation [cyan]{name}[/] with "
                      f"{', '.join(s.workflow.agents)}. /quit to end.")
        while True:
            try:
                line = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            try:
                if line == "/stats":
                    print_stats(s.run(s.workflow.get_performance_stats()),
                                 s.run(s.workflow.get_parsl_stats()))
                elif line == "/agents":
                    print_agents(s.workflow)
                elif line == "/history":
                    print_conversation(s.run(s.workflow.history.messages(name)))
                elif line.startswith("/"):
                    console.print("commands: /stats /agents /history /quit")
                else:
                    result = s.run(s.workflow.process_request(
                        line, conversation_id=name, agents=agents_list(agents),
                        options=generation_options(seed, max_tokens)))
                    print_result(result)
            except KeyboardInterrupt:
                console.print("[dim](interrupted)[/]")
                break
    console.print("[dim]bye[/]")


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def history(name, as_json):
    """List conversations, or print the conversation NAME."""
    from hpc_chat.history import SQLiteHistory

    unit = SQLiteHistory()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(unit.initialize())
        if name:
            messages = loop.run_until_complete(unit.messages(name))
            if not messages:
                raise CliError(f"no conversation named {name!r} in {unit.path}")
            if as_json:
                click.echo(json.dumps(messages, indent=2, ensure_ascii=False))
            else:
                print_conversation(messages)
        else:
            convs = loop.run_until_complete(unit.conversations())
            if as_json:
                click.echo(json.dumps(convs, indent=2))
                return
            table = Table("conversation", "messages", "last activity", title=str(unit.path))
            for c in convs:
                table.add_row(c["name"], str(c["messages"]),
                              time.strftime("%Y-%m-%d %H:%M", time.localtime(c["updated_at"])))
            console.print(table)
    finally:
        loop.run_until_complete(unit.close())
        loop.close()
