"""Interactive commands: ``ask``, ``chat`` and ``history``."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click
from rich.table import Table
from rich.text import Text

from hpc_chat.cli import remote
from hpc_chat.cli.app import (
    CliError,
    Session,
    agents_list,
    cli,
    console,
    err_console,
    generation_options,
    schema_option,
    server_option,
    with_common,
)
from hpc_chat.cli.live import answer_live
from hpc_chat.cli.output import print_agents, print_conversation, print_result, print_stats
from hpc_chat.cli.repl import repl


@cli.command()
@click.argument("question")
@with_common
@click.option("--conversation", default=None, metavar="NAME",
              help="Store the exchange in this conversation; later turns see it.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("-q", "--raw", is_flag=True,
              help="Only the answer on stdout; nothing on stderr but errors.")
@schema_option
@server_option
def ask(question, config, site, endpoint, allocation, agents, seed, max_tokens, collab_mode,
        model, conversation, as_json, raw, schema, server):
    """Ask one question; the routed agents answer in parallel, each in a live panel on a
    terminal. QUESTION '-' reads it from standard input (echo "What is MPI?" | hpc-chat ask -).
    A running 'hpc-chat serve' answers it from warm workers (see --server)."""
    if question == "-":
        question = sys.stdin.read()
    if not question.strip():
        raise CliError("the question is empty")
    names = agents_list(agents)
    options = generation_options(seed, max_tokens, schema, collab_mode)
    target = remote.server_to_use(server, names, config, site, endpoint, allocation, model)
    if target is not None:
        body = remote.request_body(target.model, question, options)
        if as_json:
            click.echo(json.dumps(remote.completion(target.url, body, conversation), indent=2,
                                  ensure_ascii=False))
            return
        remote.print_answer(target.url, remote.streamed_answer(
            target.url, body, conversation, live=console.is_terminal and not raw), raw=raw)
        return
    session = Session(config, site, quiet=as_json or raw, allocation=allocation,
                      endpoint=endpoint, wait_for_workers=True, model=model,
                      agents=names).check()
    from hpc_chat.driver.pool_size import answers_at_once, workers_to_start

    # one message: its pool starts only the workers its answers can use (driver.pool_size)
    wf = session.workflow
    wf.most_workers = workers_to_start([answers_at_once(wf.check(), question, names,
                                                        wf.remote_models)])
    request = {"conversation_id": conversation, "agents": names, "options": options}
    with session as s:
        if as_json or raw or not console.is_terminal:  # a pipe gets the answer once, whole
            result = s.run(s.workflow.process_request(question, **request))
        else:
            result = s.run(answer_live(s.workflow, question, console, **request))
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print_result(result, raw=raw)
    sys.exit(0 if result["ok"] else 1)


@cli.command()
@with_common
@click.option("--conversation", default=None, metavar="NAME",
              help="Conversation to continue (default: a new one named by the time).")
@server_option
def chat(config, site, endpoint, allocation, agents, seed, max_tokens, collab_mode, model,
         conversation, server):
    """Interactive chat. Commands: /stats /agents /history /quit. Ctrl-C while an answer is
    being generated cancels that answer; Ctrl-C or Ctrl-D at the prompt ends the session.
    A running 'hpc-chat serve' answers from warm workers and keeps the turns (see --server)."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    name = conversation or time.strftime("chat-%Y%m%d-%H%M%S")
    names = agents_list(agents)
    target = remote.server_to_use(server, names, config, site, endpoint, allocation, model)
    if target is not None:
        remote.chat_loop(target.url, name, target.model,
                         generation_options(seed, max_tokens, mode=collab_mode),
                         _show_history)
        return
    session = Session(config, site, allocation=allocation, endpoint=endpoint,
                      wait_for_workers=True, model=model, agents=names).check()
    request = {"conversation_id": name, "agents": names,
               "options": generation_options(seed, max_tokens, mode=collab_mode)}
    with session as s:
        console.print(Text.assemble(("hpc-chat", "bold"), " conversation ", (name, "cyan"),
                                    f" with {', '.join(s.workflow.agents)}. /quit to end."))

        def answer_line(line: str) -> None:
            task = s.loop.create_task(
                answer_live(s.workflow, line, console, **request) if console.is_terminal
                else s.workflow.process_request(line, **request))
            try:
                print_result(s.run(task))
            except KeyboardInterrupt:
                # Stop waiting for this answer. (Parsl cannot stop a task already running on
                # a worker: it finishes there, unused.)
                task.cancel()
                s.run(asyncio.gather(task, return_exceptions=True))
                raise

        repl({"/stats": lambda: print_stats(s.run(s.workflow.get_performance_stats()),
                                            s.run(s.workflow.get_parsl_stats())),
              "/agents": lambda: print_agents(s.workflow),
              "/history": lambda: print_conversation(s.run(s.workflow.history.messages(name)))},
             answer_line)


def _show_history(name: str) -> None:
    """A conversation as stored in this user's history (a server of this user on this host
    stores its turns there too)."""
    from hpc_chat.driver.history import SQLiteHistory

    unit = SQLiteHistory()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(unit.initialize())
        print_conversation(loop.run_until_complete(unit.messages(name)))
    finally:
        loop.run_until_complete(unit.close())
        loop.close()


@cli.command()
@click.argument("action_or_name", metavar="[NAME | rm NAME | export NAME]", required=False)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def history(action_or_name, name, as_json):
    """List conversations; print the conversation NAME; `history rm NAME` deletes it;
    `history export NAME` prints it as JSON lines (one message a line)."""
    from hpc_chat.driver.history import SQLiteHistory

    if action_or_name in ("rm", "export") and not name:
        raise CliError(f"give the conversation: hpc-chat history {action_or_name} NAME")
    action = action_or_name if action_or_name in ("rm", "export") else "show"
    name = name if action != "show" else action_or_name
    unit = SQLiteHistory()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(unit.initialize())
        if action == "rm":
            if not loop.run_until_complete(unit.remove(name)):
                raise CliError(f"no conversation named {name!r} in {unit.path}")
            err_console.print(f"removed conversation {name!r}", markup=False, highlight=False)
        elif name:
            messages = loop.run_until_complete(unit.messages(name))
            if not messages:
                raise CliError(f"no conversation named {name!r} in {unit.path}")
            if action == "export":
                for m in messages:
                    click.echo(json.dumps({"conversation": name, **m}, ensure_ascii=False))
            elif as_json:
                click.echo(json.dumps(messages, indent=2, ensure_ascii=False))
            else:
                print_conversation(messages)
        else:
            convs = loop.run_until_complete(unit.conversations())
            if as_json:
                click.echo(json.dumps(convs, indent=2))
                return
            table = Table("conversation", "messages", "last activity", title=Text(str(unit.path)))
            for c in convs:
                table.add_row(Text(c["name"]), str(c["messages"]),
                              time.strftime("%Y-%m-%d %H:%M", time.localtime(c["updated_at"])))
            console.print(table)
    finally:
        loop.run_until_complete(unit.close())
        loop.close()
