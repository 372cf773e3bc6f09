"""``embed``: a corpus of texts in, one vector per text out, on the workers of any site."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from hpc_chat.cli.app import (
    CliError,
    Interrupted,
    Session,
    cli,
    err_console,
    exit_interrupted,
    model_option,
    raise_interrupted,
    site_options,
)
from hpc_chat.util.outputfiles import GROUP_READABLE, PRIVATE


def _with(options):
    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False,
                                                               allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="JSONL output: one line per input, in input order, written as slices "
                   "complete.")
@click.option("--agent", default=None, metavar="NAME",
              help="The agent whose model embeds (default: the workflow's default agent).")
@click.option("--resume", is_flag=True,
              help="Continue OUTPUT: skip the ids already embedded (failed ones run again).")
@click.option("--npy", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write every embedded vector of OUTPUT, in its order, as a float32 "
                   ".npy array, and their ids to FILE.ids (one JSON value a line).")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "text"]), default="auto",
              help="Input format (auto: .jsonl or a first line starting with '{' means "
                   "JSONL {\"id\", \"prompt\"}, else one text a line).")
@click.option("--group-readable", is_flag=True, envvar="HPC_CHAT_GROUP_READABLE",
              help="Create OUTPUT readable by its group (0640); by default only you can "
                   "read it (0600).")
@_with([*site_options, model_option])
def embed(input_path, output, agent, resume, npy, fmt, group_readable, config, site,
          endpoint, allocation, model):
    """Embed every text of INPUT (one a line, or JSONL; '-' is standard input) into OUTPUT with
    an agent's model, spread over the site's workers. Exit 0 when every input was embedded,
    1 when some failed (their lines say why; --resume retries them)."""
    from hpc_chat.batch.embed import EmbedRun, write_npy

    run = EmbedRun(input_path, output, fmt=fmt, resume=resume,
                   mode=GROUP_READABLE if group_readable else PRIVATE)
    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        if run.skipped:
            err_console.print(f"{run.skipped} inputs already embedded in {output}: skipped",
                              markup=False)
        if run.todo:
            _embed_on_workers(run, config, site, endpoint, allocation, model, agent)
    except (Interrupted, KeyboardInterrupt) as exc:
        exit_interrupted(exc, f"{run.written} lines saved in {output}")
    finally:
        run.close()
        signal.signal(signal.SIGTERM, previous)
    err_console.print(f"{run.written} lines written to {output}"
                      + (f", {run.failed} failed" if run.failed else ""), markup=False)
    if npy:
        rows = write_npy(Path(output), Path(npy))
        err_console.print(f"{rows} vectors written to {npy} (ids: {npy}.ids)", markup=False)
    sys.exit(1 if run.failed else 0)


def _embed_on_workers(run, config, site, endpoint, allocation, model, agent) -> None:
    session = Session(config, site, allocation=allocation, endpoint=endpoint, model=model,
                      agents=[agent] if agent else None).check()
    total, done = len(run.todo), 0
    from hpc_chat.batch.embed import WINDOW
    from hpc_chat.driver.embeddings import slices

    # a task a slice, WINDOW slices in flight (driver.pool_size)
    session.workflow.most_workers = min(slices(total), WINDOW)

    def advance(n: int, _ok: int) -> None:
        nonlocal done
        done += n
        err_console.print(f"embedded {done}/{total}", markup=False, highlight=False)

    with session as s:
        name = agent or s.workflow.loaded.default_agent
        if name not in s.workflow.agents:
            raise CliError(f"the workflow has no agent {name!r}; its agents: "
                           f"{', '.join(sorted(s.workflow.agents))}")
        s.run(run.run(s.workflow, name, on_slice=advance))
