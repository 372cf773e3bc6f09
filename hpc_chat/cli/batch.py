"""``batch`` and ``stats``: a file of prompts in, a file of answers out."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path

import click

from hpc_chat.cli import remote
from hpc_chat.cli.app import (
    CliError,
    Interrupted,
    Session,
    agents_list,
    cli,
    err_console,
    exit_interrupted,
    generation_options,
    raise_interrupted,
    schema_option,
    server_option,
    with_common,
)
from hpc_chat.cli.output import print_stats, render_result
from hpc_chat.util.outputfiles import GROUP_READABLE, PRIVATE


@cli.command()
@click.argument("input_path", metavar="INPUT", required=False, envvar="HPC_CHAT_INPUT",
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", envvar="HPC_CHAT_OUTPUT",
              type=click.Path(dir_okay=False, allow_dash=True),
              help="JSONL output; one line per input line, written as each completes; '-' is "
                   "standard output (default: $HPC_CHAT_OUTPUT).")
@click.option("--resume", is_flag=True,
              help="Continue OUTPUT: skip answered ids, and lines that failed on their input "
                   "and have not changed.")
@click.option("--retry-failed", is_flag=True,
              help="With --resume, also rerun the ids that failed: at run time (timeouts, "
                   "lost workers), or on an input that can run (too long for the context, "
                   "an unknown model: the config may have changed).")
@click.option("--check", "check_only", is_flag=True,
              help="Only read INPUT and report every bad line and duplicate id; run nothing.")
@click.option("--show", is_flag=True, help="Also print each answer as it completes.")
@click.option("--summary-json", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Also write the run's summary (counts, times, tokens, Parsl) as JSON here "
                   "('-': standard output).")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "text", "openai"]),
              default="auto",
              help="Input format (auto: OpenAI batch request lines, or .jsonl or a first line "
                   "starting with '{' means JSONL, else text).")
@click.option("--output-format", type=click.Choice(["auto", "native", "openai"]),
              default="auto", envvar="HPC_CHAT_OUTPUT_FORMAT", show_default=True,
              help="native: one hpc_chat line per input line; openai: OpenAI batch output, "
                   "failed requests beside it (out.jsonl: out.errors.jsonl); auto: openai "
                   "for an OpenAI input, else native.")
@click.option("--group-readable", is_flag=True, envvar="HPC_CHAT_GROUP_READABLE",
              help="Create OUTPUT (and its errors file) readable by its group (0640); by "
                   "default only you can read them (0600): they hold every prompt.")
@click.option("--task-size", type=click.IntRange(1, 1024), default=None,
              help="Requests per worker task (default: the workflow's performance.batch_size, "
                   "4). Each task costs the driver and its worker about 2 ms beyond its "
                   "answers: for a corpus of short answers 16 or 32 runs faster. A task's "
                   "requests share its time limit (performance.timeout_seconds) while they "
                   "wait for the engine's slots: raise that too for long answers.")
@with_common
@schema_option
@server_option
def batch(input_path, output, resume, retry_failed, check_only, show, summary_json, fmt,
          output_format, group_readable, task_size, config, site, endpoint, allocation, agents,
          seed, max_tokens, collab_mode, model, schema, server):
    """Answer every prompt in INPUT (JSONL, one prompt per line, or an OpenAI batch file; '-'
    is standard input) into OUTPUT. INPUT and OUTPUT may come from $HPC_CHAT_INPUT and
    $HPC_CHAT_OUTPUT (as in jobs/driver.sh). In an OpenAI file, each line's body.model names
    the agent ('auto': routed). Exit 0 when every line was answered, 1 when some failed."""
    from hpc_chat.batch.input import read_batch

    if check_only:
        if not input_path:
            raise CliError("give INPUT (or set HPC_CHAT_INPUT)")
        _report_check(read_batch(input_path, fmt), input_path)
    missing = [f"{what} (or set {var})" for what, var, value in (
        ("INPUT", "HPC_CHAT_INPUT", input_path), ("-o OUTPUT", "HPC_CHAT_OUTPUT", output))
        if not value]
    if missing:
        raise CliError("give " + " and ".join(missing))
    names, options = agents_list(agents), generation_options(seed, max_tokens, schema,
                                                             collab_mode)
    target = remote.server_to_use(server, names, config, site, endpoint, allocation, model)
    run = dict(fmt=fmt, output_format=output_format, resume=resume, retry_failed=retry_failed,
               show=show, summary_json=summary_json, endpoint=endpoint,
               mode=GROUP_READABLE if group_readable else PRIVATE)
    if endpoint and task_size is not None:
        raise CliError("--task-size groups requests into Parsl tasks; on a Globus Compute "
                       "endpoint each request is its own task: leave --task-size out")
    if target is not None and task_size is not None:
        raise CliError(f"--task-size sets the tasks of this command's own workers; the server "
                       f"at {target.url} groups requests its own way: add --server off")
    if target is not None:
        err_console.print(f"answering through the server at {target.url} (its workers are "
                          f"warm; --server off starts workers of this command's own)",
                          markup=False, highlight=False)
        _run(input_path, output, answer_run=_through_server(target, options), **run)
        return
    session = Session(config, site, allocation=allocation, endpoint=endpoint, model=model,
                      agents=names, task_size=task_size).check()
    from hpc_chat.batch.run import job_banner

    banner = job_banner(site, allocation)
    if banner:
        err_console.print(banner, highlight=False, markup=False)
    try:
        _run(input_path, output, answer_run=_on_workers(session, names, options), **run)
    finally:
        if not session.loop.is_closed():
            session.loop.close()


def _report_check(items, input_path) -> None:
    bad = [it for it in items if it.error]
    for it in bad:
        err_console.print(it.error, markup=False, highlight=False)
    click.echo(f"{input_path}: {len(items)} lines, {len(items) - len(bad)} runnable, "
               f"{len(bad)} bad", err=True)
    sys.exit(2 if bad else 0)


def _on_workers(session, agents, options):
    """Answer a run's prompts with this command's own workers; (perf, Parsl statistics)."""
    from hpc_chat.batch.run import answer_with_workflow, workers_to_use

    def answer_run(run, show):
        session.workflow.globus_state = run.globus_state()
        session.workflow.most_workers = workers_to_use(session.workflow, run.runnable, agents)
        with session as s, _progress(run, show) as (progress, on_result):
            try:
                s.run(answer_with_workflow(s.workflow, run.runnable, run.writer,
                                           agents=agents, options=options,
                                           on_result=on_result, on_status=progress.status))
            finally:
                progress.stop()
            return s.run(s.workflow.get_performance_stats()), \
                s.run(s.workflow.get_parsl_stats())
    return answer_run


def _through_server(target, options):
    """Answer a run's prompts through the server ``target`` (no Parsl statistics here: the
    server's are in ``hpc-chat status --server``)."""
    from hpc_chat.batch.through_server import answer_through_server

    def answer_run(run, show):
        with _progress(run, show) as (progress, on_result):
            try:
                answer_through_server(target.url, run.runnable, run.writer,
                                      models=target.models, agent=target.model,
                                      options=options, on_result=on_result,
                                      on_status=progress.status)
            finally:
                progress.stop()
        return {}, None
    return answer_run


@contextlib.contextmanager
def _progress(run, show):
    """The progress bar (or periodic lines) of a run, and what each answer reports to it."""
    from hpc_chat.util.progress import BatchProgress

    with BatchProgress(len(run.runnable)) as progress:
        def on_result(item, result):
            if show:
                progress.print(render_result(item.id, result))
            progress.advance(ok=result["ok"])
        yield progress, on_result


def _run(input_path, output, *, fmt, output_format, resume, retry_failed, show,
         summary_json, endpoint, mode, answer_run) -> None:
    from hpc_chat.batch.run import BatchRun, summary

    run = BatchRun(input_path, output, fmt=fmt, output_format=output_format, resume=resume,
                   retry_failed=retry_failed, endpoint=endpoint, mode=mode)
    note = run.describe_skipped()
    if note:
        err_console.print(note, markup=False, highlight=False)
    previous = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGTERM,)}
    perf, parsl_stats = {}, None
    try:
        if run.write_bad_lines():
            where = f"their entries in {run.writer.errors_path} say why" \
                if run.writer.style == "openai" else "their output lines say why"
            err_console.print(f"{len(run.bad)} input lines cannot run ({where})", markup=False)
        if run.runnable:
            perf, parsl_stats = answer_run(run, show)
    except (Interrupted, KeyboardInterrupt) as exc:
        exit_interrupted(exc, f"{run.writer.written} results saved in {output}")
    finally:
        run.close()
        for s_, h in previous.items():
            signal.signal(s_, h)
    result = summary(run.writer.totals, model_loads=perf.get("model_loads"))
    print_stats(result, parsl_stats, title=f"Batch {Path(input_path).name}")
    if summary_json:
        text = json.dumps({**result, "parsl": parsl_stats}, indent=2)
        if summary_json == "-":
            click.echo(text)
        else:
            Path(summary_json).write_text(text + "\n")
    failed = result["failed_requests"]
    earlier = run.skipped["input"] + run.skipped["runtime"]
    if earlier:
        err_console.print(f"{earlier} lines that failed in an earlier run still have no answer "
                          f"(see the resume note above)", markup=False)
    if run.writer.style == "openai" and failed and output != "-":
        err_console.print(f"{run.writer.written - failed} answers written to {output}, "
                          f"{failed} failed request{'s' if failed > 1 else ''} to "
                          f"{run.writer.errors_path}", markup=False)
    else:
        err_console.print(f"{run.writer.written} results written to {output}"
                          + (f", {failed} failed" if failed else ""), markup=False)
    sys.exit(1 if failed or earlier else 0)


@cli.command()
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats(output, as_json):
    """Statistics of a batch OUTPUT file (the last line of each id counts)."""
    from hpc_chat.batch.output import stats_from_output

    perf = stats_from_output(output)
    if as_json:
        click.echo(json.dumps(perf, indent=2))
    else:
        print_stats(perf, title=f"Batch output {output}", to_stdout=True)


@cli.command()
@click.argument("output", type=click.Path(dir_okay=False))
@click.argument("ident", metavar="ID")
@click.option("--config", "config", default=None, metavar="PATH",
              help="Workflow YAML (default: the packaged ParslChatWorkflow.yml).")
@click.option("--site", default=None, metavar="NAME",
              help="Site profile to replay on (default: the one recorded).")
@click.option("--model", default=None, metavar="NAME",
              help="The model to replay with (default: the one recorded).")
def replay(output, ident, config, site, model):
    """Answer ID of a batch OUTPUT again from its provenance (the exact messages, sampler
    settings and seed) and say whether the answer and the model file are the same.
    Exit 0 when every agent's answer is identical, 1 when one differs."""
    from hpc_chat.batch.replay import find_answer
    from hpc_chat.batch.replay import replay as replay_answer

    recorded = find_answer(output, ident)
    site = site or recorded.get("site")
    models = {a.get("model") for a in recorded["agents"]}
    model = model or (models.pop() if len(models) == 1 else None)
    session = Session(config, site, model=model, wait_for_workers=True,
                      agents=[a["agent"] for a in recorded["agents"]]).check()
    with session as s:
        outcomes = s.run(replay_answer(s.workflow, recorded))
    same = True
    for o in outcomes:
        if not o["ok"]:
            verdict, same = f"failed: {o['error']}", False
        elif o["same_answer"]:
            verdict = "identical answer"
        else:
            verdict, same = "different answer", False
        model_note = "same model file" if o["same_model"] else \
            f"model file differs (sha256 {o['model_sha256']}, recorded " \
            f"{o['recorded_model_sha256']})"
        batched = "; it was decoded in a batch with other requests, which can change a " \
            "few tokens" if o["batched"] and o["ok"] and not o["same_answer"] else ""
        err_console.print(f"{o['agent']}: {verdict}; {model_note}{batched}", markup=False,
                          highlight=False)
        if o["ok"] and not o["same_answer"]:
            err_console.print(f"  recorded: {recorded['answer']!r}\n  now:      "
                              f"{o['answer']!r}", markup=False, highlight=False)
    if len(outcomes) == 1 and outcomes[0]["ok"]:
        click.echo(outcomes[0]["answer"])
    sys.exit(0 if same else 1)
