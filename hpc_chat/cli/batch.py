"""``batch`` and ``stats``: a file of prompts in, a file of answers out."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from hpc_chat.cli.app import (
    CliError,
    Interrupted,
    Session,
    agents_list,
    cli,
    err_console,
    generation_options,
    raise_interrupted,
    with_common,
)
from hpc_chat.cli.output import print_stats, render_result


@cli.command()
@click.argument("input_path", metavar="INPUT", required=False, envvar="HPC_CHAT_INPUT",
                type=click.Path(dir_okay=False))
@click.option("-o", "--output", envvar="HPC_CHAT_OUTPUT", type=click.Path(dir_okay=False),
              help="JSONL output; one line per input line, written as each completes "
                   "(default: $HPC_CHAT_OUTPUT).")
@click.option("--resume", is_flag=True, help="Skip ids already answered in OUTPUT.")
@click.option("--show", is_flag=True, help="Also print each answer as it completes.")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "text"]), default="auto",
              help="Input format (auto: .jsonl or a first line starting with '{' means JSONL).")
@with_common
def batch(input_path, output, resume, show, fmt, config, site, endpoint, allocation, agents,
          seed, max_tokens, model):
    """Answer every prompt in INPUT (JSONL or one prompt per line) into OUTPUT.

    INPUT and OUTPUT may come from $HPC_CHAT_INPUT and $HPC_CHAT_OUTPUT (as in jobs/driver.sh)."""
    from hpc_chat.batchrun import BatchRun, answer_all, job_banner
    from hpc_chat.progress import BatchProgress

    missing = [f"{what} (or set {var})" for what, var, value in (
        ("INPUT", "HPC_CHAT_INPUT", input_path), ("-o OUTPUT", "HPC_CHAT_OUTPUT", output))
        if not value]
    if missing:
        raise CliError("give " + " and ".join(missing))
    banner = job_banner(site, allocation)
    if banner:
        err_console.print(banner, highlight=False, markup=False)
    run = BatchRun(input_path, output, fmt=fmt, resume=resume, endpoint=endpoint)
    if run.skipped:
        err_console.print(f"resume: {run.skipped} of {len(run.items)} prompts already answered "
                          f"in {output}")
    previous = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGTERM,)}
    failed = 0
    try:
        failed = run.write_bad_lines()
        if run.runnable:
            with Session(config, site, allocation=allocation, endpoint=endpoint,
                         globus_state=run.globus_state(), model=model) as s, \
                    BatchProgress(len(run.runnable) + failed, done=failed,
                                  failed=failed) as progress:
                def on_result(item, result):
                    if show:
                        progress.print(render_result(item.id, result))
                    progress.advance(ok=result["ok"])

                try:
                    failed += s.run(answer_all(s.workflow, run.runnable, run.writer,
                                               agents=agents_list(agents),
                                               options=generation_options(seed, max_tokens),
                                               on_result=on_result))
                finally:
                    progress.stop()
                    perf = s.run(s.workflow.get_performance_stats())
                    parsl_stats = s.run(s.workflow.get_parsl_stats())
                    print_stats(perf, parsl_stats, title=f"Batch {Path(input_path).name}")
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        err_console.print(f"interrupted: {run.writer.written} results saved in {output}; "
                          f"rerun with --resume to finish")
        sys.exit(128 + int(signum))
    finally:
        run.close()
        for s_, h in previous.items():
            signal.signal(s_, h)
    err_console.print(f"{run.writer.written} results written to {output}"
                      + (f", {failed} failed" if failed else ""))
    sys.exit(1 if failed else 0)


@cli.command()
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats(output, as_json):
    """Statistics of a batch OUTPUT file (the last line of each id counts)."""
    from hpc_chat.batchfile import stats_from_output

    perf = stats_from_output(output)
    if as_json:
        click.echo(json.dumps(perf, indent=2))
    else:
        print_stats(perf, title=f"Batch output {output}")
