"""The ``hpc-chat`` command line.

Exit codes: 0 success; 1 some requests failed; 2 usage or configuration error (the message names
the file and key); 130/143 interrupted (SIGINT/SIGTERM; everything finished is already saved).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hpc_chat import __version__
from hpc_chat.errors import HpcChatError

console = Console()
err_console = Console(stderr=True)


class CliError(click.ClickException):
    """A user-facing error: message only, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        err_console.print(f"[bold red]error:[/] {self.format_message()}", highlight=False,
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


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


class Session:
    """One event loop and one initialized workflow for the length of a command.

    The loop is driven from the main thread with ``run_until_complete`` so that ``input()``,
    readline and Ctrl-C behave as users expect in ``hpc-chat chat``; Parsl runs in its own
    threads and processes regardless.
    """

    def __init__(self, config: str | None, site: str | None, *, quiet: bool = False,
                 allocation: bool = False, wait_for_workers: bool = False,
                 endpoint: str | None = None, globus_state: str | None = None,
                 model: str | None = None):
        from hpc_chat.workflow import ParslChatWorkflow

        self.config, self.quiet, self.wait = config, quiet, wait_for_workers
        self.loop = asyncio.new_event_loop()
        self.workflow = ParslChatWorkflow(site=site, allocation=allocation, endpoint=endpoint,
                                          globus_state=globus_state, model=model)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def __enter__(self) -> Session:
        try:
            with contextlib.nullcontext() if self.quiet else \
                    err_console.status("Starting Parsl workers..."):
                self.run(self.workflow.initialize(self.config))
                if self.wait:  # interactive commands: the spinner covers worker start-up
                    self.run(self.workflow.wait_for_workers())
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


def _agents_option(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [a.strip() for a in value.split(",") if a.strip()]


common_options = [
    click.option("--config", "config", default=None, metavar="PATH",
                 help="Workflow YAML (default: the packaged ParslChatWorkflow.yml)."),
    click.option("--site", default=None, metavar="NAME",
                 help="Site profile to run on (default: the workflow's, i.e. local)."),
    click.option("--endpoint", default=None, metavar="UUID",
                 help="Run on this Globus Compute endpoint instead of Parsl workers."),
    click.option("--in-allocation", "allocation", is_flag=True,
                 help="Inside a batch job: start workers on this job's nodes with the site's "
                      "launcher instead of submitting pilot jobs."),
    click.option("--agents", default=None, metavar="A,B",
                 help="Ask these agents instead of routing by keywords."),
    click.option("--seed", type=int, default=None, help="Sampling seed (reproducible answers)."),
    click.option("--max-tokens", type=click.IntRange(1, 32768), default=None,
                 help="Cap on generated tokens per agent."),
    click.option("--model", default=None, metavar="NAME", envvar="HPC_CHAT_MODEL",
                 help="Every agent uses this model: a name, an alias, a .gguf path, or 'echo' "
                      "(the built-in test model, e.g. 'echo?tokens=64&token_s=0.05'). "
                      "Default: $HPC_CHAT_MODEL, else each agent's own."),
]


def with_common(fn):
    for option in reversed(common_options):
        fn = option(fn)
    return fn


def _options(seed, max_tokens) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if seed is not None:
        opts["seed"] = seed
    if max_tokens is not None:
        opts["max_tokens"] = max_tokens
    return opts


@click.group(cls=HpcChatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpc-chat")
@click.option("--debug", is_flag=True, help="Debug logging (hpc_chat, Parsl, llama.cpp).")
def cli(debug: bool) -> None:
    """Multi-agent chat with local LLMs on HPC allocations, through Parsl."""
    from hpc_chat.core.logging_system import set_debug_mode

    set_debug_mode(debug)


# --------------------------------------------------------------------------- ask
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
                                                 agents=_agents_option(agents),
                                                 options=_options(seed, max_tokens)))
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        _print_result(result)
    sys.exit(0 if result["ok"] else 1)


def _render_result(ident: Any, result: dict[str, Any]):
    from rich.panel import Panel
    from rich.text import Text

    body = Text(result["response"] if result["ok"] else f"failed: {result['error']}")
    agents = ", ".join(result["agents"]) or "-"
    return Panel(body, title=Text(f"{ident}: {result['prompt']}"),
                 subtitle=f"{agents} · {result['latency_s']:.1f} s · "
                          f"{result['completion_tokens']} tokens",
                 title_align="left", subtitle_align="right")


def _print_result(result: dict[str, Any]) -> None:
    if result["ok"]:
        console.print(result["response"], highlight=False, markup=False)
        detail = ", ".join(
            f"{r['agent']}" + (" (cached)" if r.get("cached") else "")
            for r in result["responses"] if not r.get("error"))
        console.print(f"[dim]{detail} · {result['latency_s']:.2f} s · "
                      f"{result['completion_tokens']} tokens[/]")
    else:
        err_console.print(f"[bold red]failed:[/] {result['error']}", highlight=False)


# --------------------------------------------------------------------------- chat
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
                    _print_stats(s.run(s.workflow.get_performance_stats()),
                                 s.run(s.workflow.get_parsl_stats()))
                elif line == "/agents":
                    _print_agents(s.workflow)
                elif line == "/history":
                    _print_conversation(s.run(s.workflow.history.messages(name)))
                elif line.startswith("/"):
                    console.print("commands: /stats /agents /history /quit")
                else:
                    result = s.run(s.workflow.process_request(
                        line, conversation_id=name, agents=_agents_option(agents),
                        options=_options(seed, max_tokens)))
                    _print_result(result)
            except KeyboardInterrupt:
                console.print("[dim](interrupted)[/]")
                break
    console.print("[dim]bye[/]")


def _print_agents(workflow) -> None:
    table = Table("agent", "temperature", "threshold", "keywords", "description")
    for agent in workflow.agents.values():
        c = agent.config.config
        table.add_row(agent.name, str(c.temperature), str(c.collaboration.delegation_threshold),
                      ", ".join(c.collaboration.specialization_keywords), agent.description)
    console.print(table)


def _print_conversation(messages: list[dict[str, Any]]) -> None:
    if not messages:
        console.print("[dim](no messages)[/]")
    for m in messages:
        who = "you" if m["role"] == "user" else (m.get("agent") or "assistant")
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(m["created_at"]))
        console.print(f"[bold]{who}[/] [dim]{stamp}[/]")
        console.print(m["content"], highlight=False, markup=False)
        console.print()


def _print_stats(perf: dict[str, Any], parsl_stats: dict[str, Any] | None = None,
                 title: str = "Statistics") -> None:
    table = Table("metric", "value", title=title)
    rows = [
        ("requests (ok / failed)", f"{perf['successful_requests']} / {perf['failed_requests']}"),
        ("response time avg / min / max", f"{perf['avg_response_time']:.2f} / "
                                          f"{perf['min_response_time']:.2f} / "
                                          f"{perf['max_response_time']:.2f} s"),
        ("response time p50 / p95", f"{perf['p50_response_time']:.2f} / "
                                    f"{perf['p95_response_time']:.2f} s"),
        ("throughput", f"{perf['throughput']:.2f} req/s"),
        ("generated tokens", f"{perf['completion_tokens']} ({perf['tokens_per_s']:.1f} tok/s)"),
        ("wall time", f"{perf['wall_time']:.2f} s"),
    ]
    if "cache_hits" in perf:
        rows.append(("cache hits", str(perf["cache_hits"])))
    if perf.get("model_loads"):
        rows.append(("model loads", str(perf["model_loads"])))
    for agent, n in sorted(perf.get("agent_answers", {}).items()):
        rows.append((f"answers by {agent}", str(n)))
    if parsl_stats:
        rows += [("parsl workers", str(parsl_stats.get("active_workers", 0))),
                 ("parsl blocks", str(parsl_stats.get("blocks", 0))),
                 ("parsl tasks done / failed / retried",
                  f"{parsl_stats.get('completed_tasks', 0)} / "
                  f"{parsl_stats.get('failed_tasks', 0)} / "
                  f"{parsl_stats.get('retried_tasks', 0)}")]
    for k, v in rows:
        table.add_row(k, v)
    err_console.print(table)


# --------------------------------------------------------------------------- history
@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def history(name, as_json):
    """List conversations, or print the conversation NAME."""
    from hpc_chat.core.data_unit import DataUnitSQLite

    unit = DataUnitSQLite()
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
                _print_conversation(messages)
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


# --------------------------------------------------------------------------- batch
@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="JSONL output; one line per input line, written as each completes.")
@click.option("--resume", is_flag=True, help="Skip ids already answered in OUTPUT.")
@click.option("--show", is_flag=True, help="Also print each answer as it completes.")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "text"]), default="auto",
              help="Input format (auto: .jsonl or a first line starting with '{' means JSONL).")
@with_common
def batch(input_path, output, resume, show, fmt, config, site, endpoint, allocation, agents,
          seed, max_tokens, model):
    """Answer every prompt in INPUT (JSONL or one prompt per line) into OUTPUT."""
    from hpc_chat.batch import OutputWriter, answered_ids, id_key, read_batch

    items = read_batch(input_path, fmt)
    done = answered_ids(output) if resume else set()
    writer = OutputWriter(output, resume=resume)  # fails here, before any work, if unwritable
    todo = [it for it in items if id_key(it.id) not in done]
    skipped = len(items) - len(todo)
    if skipped:
        err_console.print(f"resume: {skipped} of {len(items)} prompts already answered "
                          f"in {output}")
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM,)}
    failed = 0
    try:
        bad = [it for it in todo if it.error]
        for it in bad:
            writer.write(it, None, finished_at=time.time())
        runnable = [it for it in todo if not it.error]
        failed = len(bad)
        if runnable:
            # With an endpoint, the task group is kept beside the output for --resume.
            globus_state = f"{output}.globus.json" if endpoint else None
            if endpoint and not resume and Path(globus_state).exists():
                Path(globus_state).unlink()  # a new batch into a new output: a new group
            with Session(config, site, allocation=allocation, endpoint=endpoint,
                         globus_state=globus_state, model=model) as s:
                try:
                    failed += s.run(_run_batch(s.workflow, runnable, writer,
                                               agents=_agents_option(agents),
                                               options=_options(seed, max_tokens),
                                               already_failed=len(bad), show=show))
                finally:
                    perf = s.run(s.workflow.get_performance_stats())
                    parsl_stats = s.run(s.workflow.get_parsl_stats())
                    _print_stats(perf, parsl_stats, title=f"Batch {Path(input_path).name}")
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        err_console.print(f"interrupted: {writer.written} results saved in {output}; "
                          f"rerun with --resume to finish")
        sys.exit(128 + int(signum))
    finally:
        writer.close()
        for s_, h in previous.items():
            signal.signal(s_, h)
    err_console.print(f"{writer.written} results written to {output}"
                      + (f", {failed} failed" if failed else ""))
    sys.exit(1 if failed else 0)


async def _run_batch(workflow, items, writer, *, agents, options, already_failed: int,
                     show: bool = False) -> int:
    """Submit everything, write each result as it completes; returns the number failed."""
    from hpc_chat.batch import id_key
    from hpc_chat.progress import BatchProgress

    async def answer(item):
        return item, await workflow.submit_request(item.prompt, agents=agents, options=options,
                                                   request_key=id_key(item.id))

    failed = 0
    with BatchProgress(len(items) + already_failed, done=already_failed,
                       failed=already_failed) as progress:
        for next_done in asyncio.as_completed([answer(it) for it in items]):
            item, result = await next_done
            writer.write(item, result, finished_at=time.time())
            failed += not result["ok"]
            if show:
                progress.print(_render_result(item.id, result))
            progress.advance(ok=result["ok"])
    return failed


# --------------------------------------------------------------------------- stats
@cli.command()
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats(output, as_json):
    """Statistics of a batch OUTPUT file (the last line of each id counts)."""
    from hpc_chat.batch import stats_from_output

    perf = stats_from_output(output)
    if as_json:
        click.echo(json.dumps(perf, indent=2))
    else:
        _print_stats(perf, title=f"Batch output {output}")


# --------------------------------------------------------------------------- sites
@cli.group()
def sites():
    """Site profiles: list, show, validate, render (dry run)."""


@sites.command("list")
def sites_list():
    """Every profile on the search path."""
    from hpc_chat.sites.registry import all_profiles, load_profile, search_path

    table = Table("site", "scheduler", "launcher", "description")
    for name, path in sorted(all_profiles().items()):
        try:
            p = load_profile(path)
            table.add_row(name, p.scheduler, p.launcher, p.description)
        except HpcChatError:
            table.add_row(name, "[red]invalid[/]", "", "run: hpc-chat sites validate " + name)
    console.print(table)
    console.print("[dim]search path: " + ":".join(str(d) for d in search_path()) + "[/]")


@sites.command("show")
@click.argument("name")
def sites_show(name):
    """Print a profile file and where it was found."""
    from hpc_chat.sites.registry import find_profile, load_profile

    path = find_profile(name)
    profile = load_profile(path)
    console.print(f"[bold]{profile.name}[/] ({profile.scheduler}, {profile.launcher}) from "
                  f"{path}", highlight=False)
    click.echo(path.read_text())
    for problem in profile.placeholders():
        err_console.print(f"[yellow]to edit before submitting:[/] {problem}", highlight=False)


@sites.command("validate")
@click.argument("names", nargs=-1)
def sites_validate(names):
    """Validate profiles (all on the search path when none is named); exit 2 when invalid."""
    from hpc_chat.sites.registry import all_profiles, load_profile

    targets = list(names) or [str(p) for p in all_profiles().values()]
    bad = 0
    for target in targets:
        try:
            profile = load_profile(target)
        except HpcChatError as exc:
            bad += 1
            err_console.print(f"[bold red]invalid[/] {exc}", highlight=False)
            continue
        notes = profile.placeholders()
        extra = f" ({len(notes)} placeholder values to edit before submitting)" if notes else ""
        console.print(f"[green]ok[/] {profile.name}: {profile.source}{extra}", highlight=False)
    if bad:
        raise CliError(f"{bad} of {len(targets)} profiles are invalid")


@sites.command("render")
@click.argument("name")
@click.option("--input", "input_path", default="prompts.jsonl", show_default=True,
              help="Input file to show in the driver script.")
@click.option("--output", "output_path", default="answers.jsonl", show_default=True,
              help="Output file to show in the driver script.")
def sites_render(name, input_path, output_path):
    """Dry run: the Parsl config, the pilot-job script Parsl would submit, and the driver job
    script, without submitting anything."""
    from hpc_chat.sites.registry import load_profile
    from hpc_chat.sites.render import render_parsl_config, render_pilot_script
    from hpc_chat.sites.submit import render_driver_script

    profile = load_profile(name)
    console.rule(f"Parsl executor for {profile.name}")
    click.echo(render_parsl_config(profile))
    command, script = render_pilot_script(profile)
    console.rule("Pilot job (written by Parsl's provider)")
    click.echo(f"# submitted with: {command}")
    click.echo(script)
    if profile.scheduler != "local":
        console.rule("Driver job (hpc-chat submit)")
        click.echo(render_driver_script(profile, input_path, output_path).script)
    for problem in profile.placeholders():
        err_console.print(f"[yellow]to edit before submitting:[/] {problem}", highlight=False)


@sites.command("test")
@click.argument("name")
@click.option("--requests", "n_requests", type=click.IntRange(1, 100), default=3,
              show_default=True, help="Echo requests to send once workers are up.")
@click.option("--timeout", type=click.FloatRange(1, 86400), default=600, show_default=True,
              help="Seconds to wait for the pilot job, its workers and the answers.")
@click.option("--model", default=None, metavar="NAME",
              help="Model to test with (default: the built-in 'echo?tokens=8', so no model "
                   "file is needed).")
@click.option("--config", default=None, metavar="PATH", help="Workflow YAML (agents).")
def sites_test(name, n_requests, timeout, model, config):
    """Try a site end to end with the built-in echo model: submit a pilot job through the real
    scheduler and report each stage (submitted, pending, running, workers, answered).
    Exit 0 when every request was answered, 1 when a stage failed."""
    from hpc_chat.site_check import DEFAULT_MODEL, check_site

    def report(stage: str, detail: str) -> None:
        from rich.text import Text

        style = "bold red" if stage == "failed" else "green"
        console.print(Text.assemble((f"{stage:>10} ", style), detail), highlight=False,
                      soft_wrap=True)

    loop = asyncio.new_event_loop()
    try:
        ok = loop.run_until_complete(check_site(name, report=report, requests=n_requests,
                                                timeout=timeout, model=model or DEFAULT_MODEL,
                                                config=config))
    finally:
        loop.close()
    sys.exit(0 if ok else 1)


# --------------------------------------------------------------------------- bench
@cli.command()
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Runs per figure (the median is reported).")
@click.option("--requests", "n_requests", type=click.IntRange(8, 1000), default=32,
              show_default=True, help="Requests in the throughput batch.")
@click.option("--results-dir", default="bench-results", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--docs-dir", default="docs", show_default=True, type=click.Path(file_okay=False))
@click.option("--no-slurm", is_flag=True, help="Skip the local-Slurm case.")
@click.option("--report-only", is_flag=True,
              help="Rewrite the report from RESULTS_DIR/results.json without measuring.")
def bench(repeats, n_requests, results_dir, docs_dir, no_slurm, report_only):
    """Run the benchmark suite; write results JSON, docs/performance.md and its plot."""
    from hpc_chat.bench.report import verdicts, write_report
    from hpc_chat.bench.suite import run_suite

    if report_only:
        saved = Path(results_dir) / "results.json"
        if not saved.is_file():
            raise CliError(f"{saved}: no results to report; run 'hpc-chat bench' first")
        res = json.loads(saved.read_text())
    else:
        res = run_suite(repeats=repeats, requests=n_requests, slurm=not no_slurm,
                        log=lambda text: err_console.print(text, highlight=False))
    readme = Path("README.md")
    for path in write_report(res, Path(results_dir), Path(docs_dir),
                             readme if readme.exists() else None):
        console.print(f"wrote {path}", highlight=False)
    for desc, value, bound, ok in verdicts(res):
        console.print(f"{'[green]met[/]' if ok else '[red]missed[/]'} {desc}: {value:.3g} "
                      f"(target {bound})", highlight=False)


# --------------------------------------------------------------------------- endpoint
@cli.group()
def endpoint():
    """Globus Compute: endpoint configs for admins, login for users."""


@endpoint.command("config")
@click.option("--site", required=True, metavar="NAME", help="Site profile to convert.")
@click.option("-o", "--output-dir", default=None, type=click.Path(file_okay=False),
              help="Directory for config.yaml and README.md (default: ./endpoint-SITE).")
def endpoint_config_cmd(site, output_dir):
    """Write a globus-compute-endpoint config.yaml (and a README) from a site profile."""
    from hpc_chat.globus.endpoint_config import write_endpoint_files
    from hpc_chat.sites.registry import load_profile

    profile = load_profile(site)
    out = Path(output_dir or f"endpoint-{profile.name}")
    for path in write_endpoint_files(profile, out):
        console.print(f"wrote {path}", highlight=False)
    for problem in profile.placeholders():
        err_console.print(f"[yellow]to edit before starting the endpoint:[/] {problem}",
                          highlight=False)


@endpoint.command("login")
def endpoint_login():
    """Log in to Globus Compute (opens the SDK's browser login flow)."""
    from hpc_chat.globus.client import login

    login()
    console.print("logged in to Globus Compute")


# --------------------------------------------------------------------------- jobs
@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--site", required=True, metavar="NAME", help="Site profile.")
@click.option("--dry-run", is_flag=True, help="Print the driver job script; submit nothing.")
@click.option("--config", default=None, metavar="PATH", help="Workflow YAML for the driver.")
@click.option("--agents", default=None, metavar="A,B", help="Passed to hpc-chat batch.")
@click.option("--seed", type=int, default=None, help="Passed to hpc-chat batch.")
@click.option("--model", default=None, metavar="NAME", help="Passed to hpc-chat batch.")
def submit(input_path, output, site, dry_run, config, agents, seed, model):
    """Submit a batch as a driver job (sbatch/qsub) on SITE."""
    from hpc_chat.sites.registry import load_profile
    from hpc_chat.sites.submit import render_driver_script, submit_driver

    profile = load_profile(site)
    extra = []
    if config:
        extra += ["--config", str(Path(config).resolve())]
    if agents:
        extra += ["--agents", agents]
    if seed is not None:
        extra += ["--seed", str(seed)]
    if model:
        extra += ["--model", model]
    job = render_driver_script(profile, input_path, output, extra_args=extra)
    if dry_run:
        click.echo(job.script)
        return
    job = submit_driver(profile, job)
    console.print(f"submitted job [bold]{job.job_id}[/] on {profile.name} ({job.scheduler})",
                  highlight=False)
    console.print(f"  output: {job.output}\n  log:    {job.log}\n"
                  f"  follow: hpc-chat status {job.job_id}", highlight=False)


@cli.command()
@click.argument("job_id", required=False)
def status(job_id):
    """State of a job from 'hpc-chat submit' (default: the latest) and its progress."""
    from hpc_chat.batch import answered_ids, read_batch
    from hpc_chat.sites.submit import find_job, job_state

    job = find_job(job_id)
    state = job_state(job)
    done = len(answered_ids(job["output"])) if Path(job["output"]).exists() else 0
    try:
        total = len(read_batch(job["input"]))
    except HpcChatError:
        total = None
    table = Table("job", "site", "state", "answered", "output", "log")
    table.add_row(job["job_id"], job["site"], state,
                  f"{done}/{total}" if total is not None else str(done), job["output"],
                  job["log"])
    console.print(table)


@cli.command()
@click.argument("job_id", required=False)
def cancel(job_id):
    """Cancel a job from 'hpc-chat submit' (default: the latest)."""
    from hpc_chat.sites.submit import cancel_job, find_job

    job = find_job(job_id)
    cancel_job(job)
    console.print(f"cancelled job {job['job_id']}; answers so far stay in {job['output']} "
                  f"(resubmit to resume)", highlight=False)


def main() -> None:
    cli(prog_name="hpc-chat")


if __name__ == "__main__":
    main()
