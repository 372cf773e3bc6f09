"""The ``hpc-chat`` group, its error handling, the shared options and the workflow session.

Exit codes: 0 success; 1 some requests failed; 2 usage or configuration error (the message names
the file and key); 130/143 interrupted (SIGINT/SIGTERM; everything finished is already saved).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from hpc_chat import __version__
from hpc_chat.errors import HpcChatError


def _console(stderr: bool = False) -> Console:
    """On a terminal, rich's own width; piped or redirected, no wrapping and tables at their
    natural width (COLUMNS still wins when set), so text and paths reach files whole."""
    term = Console(stderr=stderr, soft_wrap=True)
    if term.is_terminal or os.environ.get("COLUMNS"):
        return term
    return Console(stderr=stderr, soft_wrap=True, width=100_000)


console = _console()
err_console = _console(stderr=True)


class CliError(click.ClickException):
    """A user-facing error: message only, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        err_console.print(f"[bold red]error:[/] {escape(self.format_message())}", highlight=False,
                          markup=True, soft_wrap=True)


class HpcChatGroup(click.Group):
    """Turns :class:`HpcChatError` into a clean message and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HpcChatError as exc:
            raise CliError(str(exc)) from None
        except KeyboardInterrupt:  # e.g. Ctrl-C while workers start; Parsl is already down
            err_console.print("interrupted")
            sys.exit(130)


class Interrupted(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def raise_interrupted(signum, frame):
    raise Interrupted(signum)


def exit_interrupted(exc: BaseException, saved: str) -> None:
    """End a resumable command stopped by SIGINT or SIGTERM: say what is saved, exit
    128 + the signal."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    err_console.print(f"interrupted: {saved}; rerun with --resume to finish", markup=False)
    sys.exit(128 + int(signum))


class Session:
    """One event loop and one initialized workflow for the length of a command.

    The loop is driven from the main thread with ``run_until_complete`` so that ``input()``,
    readline and Ctrl-C behave as users expect in ``hpc-chat chat``; Parsl runs in its own
    threads and processes regardless.
    """

    def __init__(self, config: str | None, site: str | None, *, quiet: bool = False,
                 allocation: bool = False, wait_for_workers: bool = False,
                 endpoint: str | None = None, globus_state: str | None = None,
                 model: str | None = None, agents: list[str] | None = None,
                 task_size: int | None = None):
        from hpc_chat.driver.workflow import ParslChatWorkflow

        self.config, self.quiet, self.wait, self.agents = config, quiet, wait_for_workers, agents
        self.loop = asyncio.new_event_loop()
        self.workflow = ParslChatWorkflow(site=site, allocation=allocation, endpoint=endpoint,
                                          globus_state=globus_state, model=model,
                                          model_label=option_source("model", "--model"),
                                          task_size=task_size)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def check(self) -> Session:
        """Find configuration and usage mistakes before any worker starts (exit 2 at once)."""
        try:
            self.workflow.check(self.config)
            self.workflow.check_agents(self.agents)
        except BaseException:
            self.loop.close()
            raise
        return self

    def __enter__(self) -> Session:
        from hpc_chat.driver.startup import follow_workers

        self.check()
        try:
            with contextlib.nullcontext() if self.quiet else \
                    err_console.status("Starting Parsl workers...") as spinner:
                self.run(self.workflow.initialize(self.config))
                if self.wait:  # interactive commands: the spinner covers worker start-up
                    self.run(follow_workers(
                        self.workflow, lambda stage, detail: spinner and spinner.update(
                            Text(f"Starting Parsl workers: {detail}")),
                        timeout=self.workflow.loaded.settings.executor.timeout))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        try:
            self.run(self.workflow.shutdown())
        finally:
            self.loop.close()

    def __exit__(self, *exc) -> None:
        self.close()


def option_source(param: str, flag: str) -> str:
    """How to name an option in a message: its flag, or the variable it was taken from."""
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.get_parameter_source(param) == ParameterSource.ENVIRONMENT:
        return f"${next(p.envvar for p in ctx.command.params if p.name == param)}"
    return flag


def agents_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [a.strip() for a in value.split(",") if a.strip()]


site_options = [
    click.option("--config", "config", default=None, metavar="PATH",
                 help="Workflow YAML (default: the packaged ParslChatWorkflow.yml)."),
    click.option("--site", default=None, metavar="NAME", envvar="HPC_CHAT_SITE",
                 help="Site profile to run on (default: $HPC_CHAT_SITE, else the workflow's, "
                      "i.e. local)."),
    click.option("--endpoint", default=None, metavar="UUID",
                 help="Run on this Globus Compute endpoint instead of Parsl workers."),
    click.option("--in-allocation", "allocation", is_flag=True,
                 help="Inside a batch job: start workers on this job's nodes with the site's "
                      "launcher instead of submitting pilot jobs."),
]
request_options = [
    click.option("--agents", default=None, metavar="A,B",
                 help="Ask these agents instead of routing by keywords."),
    click.option("--seed", type=click.IntRange(0), default=None,
                 help="Sampling seed (reproducible answers)."),
    click.option("--max-tokens", type=click.IntRange(1, 32768), default=None,
                 help="Cap on generated tokens per agent."),
    click.option("--mode", "collab_mode", default=None,
                 type=click.Choice(["route", "synthesize", "review"]),
                 help="How the agents work together (default: the workflow's "
                      "collaboration.mode, i.e. route): route: the routed agents answer, "
                      "their answers joined; synthesize: then an aggregator writes one reply "
                      "from them; review: they revise after reading each other's answers "
                      "(docs/agents.md)."),
]
model_option = click.option(
    "--model", default=None, metavar="NAME", envvar="HPC_CHAT_MODEL",
    help="Every agent uses this model: a name, an alias, a .gguf path, or 'echo' (the built-in "
         "test model, e.g. 'echo?tokens=64&token_s=0.05'). Default: $HPC_CHAT_MODEL, else "
         "each agent's own.")
common_options = [*site_options, *request_options, model_option]
server_option = click.option(
    "--server", default=None, metavar="URL|off", envvar="HPC_CHAT_SERVER",
    help="Send the requests to this running 'hpc-chat serve' (its /v1 URL). Default: "
         "$HPC_CHAT_SERVER, else your server on this host when one runs, unless --site, "
         "--config, --endpoint, --in-allocation, --model or several --agents ask for workers "
         "of the command's own, or this runs inside a batch job; 'off': never.")


def with_common(fn):
    for option in reversed(common_options):
        fn = option(fn)
    return fn


def generation_options(seed, max_tokens, schema: str | None = None,
                       mode: str | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {"mode": mode} if mode else {}
    if seed is not None:
        opts["seed"] = seed
    if max_tokens is not None:
        opts["max_tokens"] = max_tokens
    if schema is not None:
        opts["response_format"] = schema_format(schema)
    return opts


schema_option = click.option(
    "--schema", default=None, metavar="FILE",
    help="Every answer is JSON fitting this JSON Schema (a .json or .yaml file), enforced "
         "while it is decoded; a keyword the grammar cannot enforce is refused up front.")


def schema_format(path: str) -> dict[str, Any]:
    """``--schema FILE`` as OpenAI's ``response_format``, checked now: an error names the file
    and the keyword at fault."""
    import json
    import re
    from pathlib import Path

    from hpc_chat.structured.compile import output_format
    from hpc_chat.util.configfile import load_yaml

    file = Path(path)
    try:
        schema = json.loads(file.read_text()) if file.suffix == ".json" else load_yaml(file)
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--schema {path}: cannot read it ({exc})") from None
    except ValueError as exc:
        raise CliError(f"--schema {path}: not JSON ({exc})") from None
    name = re.sub(r"[^A-Za-z0-9_-]", "_", file.stem)[:64] or "schema"
    fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                                                  "strict": True}}
    try:
        output_format(fmt)
    except HpcChatError as exc:
        raise CliError(f"--schema {path}: {str(exc).removeprefix('response_format.json_schema.')}"
                       ) from None
    return fmt


@click.group(cls=HpcChatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpc-chat")
@click.option("--debug", is_flag=True, help="Debug logging (hpc_chat, Parsl, llama.cpp).")
def cli(debug: bool) -> None:
    """Multi-agent chat with local LLMs on HPC allocations, through Parsl."""
    from hpc_chat.util.logs import set_debug_mode

    set_debug_mode(debug)
