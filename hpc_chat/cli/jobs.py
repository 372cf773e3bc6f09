"""Driver jobs (``submit``, ``status``, ``cancel``) and the benchmark suite (``bench``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hpc_chat.bench.sections import SECTIONS
from hpc_chat.cli.app import CliError, cli, console, err_console
from hpc_chat.errors import HpcChatError


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
    console.print(f"submitted job [bold]{escape(job.job_id)}[/] on {escape(profile.name)} "
                  f"({job.scheduler})", highlight=False)
    console.print(f"  output: {escape(job.output)}\n  log:    {escape(job.log)}\n"
                  f"  follow: hpc-chat status {job.job_id}", highlight=False)


@cli.command()
@click.argument("job_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--server", is_flag=False, flag_value="auto", default=None, metavar="[URL]",
              help="Show a running 'hpc-chat serve' instead: its pilot jobs (queued, running), "
                   "workers, model (loading, ready), requests and tokens/s. Without URL: your "
                   "server on this host.")
def status(job_id, as_json, server):
    """State of a job from 'hpc-chat submit' (default: the latest) and its progress; with
    --server, the state of a running server."""
    from hpc_chat.batch.input import iter_batch
    from hpc_chat.batch.outcomes import OutcomeIndex
    from hpc_chat.sites.submit import find_job, job_state

    if server is not None:
        _server_status(server, as_json)
        return
    job = find_job(job_id)
    state = job_state(job)
    done = 0
    if Path(job["output"]).exists():
        with OutcomeIndex(job["output"]) as outcomes:
            done = outcomes.count(ok=True)
    try:
        total = sum(1 for _ in iter_batch(job["input"])[1])  # counted, not held
    except HpcChatError:
        total = None
    if as_json:
        click.echo(json.dumps({"job_id": job["job_id"], "site": job["site"], "state": str(state),
                               "answered": done, "total": total, "input": job["input"],
                               "output": job["output"], "log": job["log"]}, indent=2))
        return
    table = Table("job", "site", "state", "answered", "output", "log")
    table.add_row(Text(job["job_id"]), Text(job["site"]), Text(str(state)),
                  f"{done}/{total}" if total is not None else str(done), Text(job["output"]),
                  Text(job["log"]))
    console.print(table)


def _server_status(server: str, as_json: bool) -> None:
    from hpc_chat.cli.remote import print_server_status
    from hpc_chat.client.http import running_server

    url = running_server() if server == "auto" else server
    if not url:
        raise CliError("no server of yours runs on this host: start one with 'hpc-chat serve', "
                       "or give its URL (--server http://HOST:PORT/v1)")
    print_server_status(url, as_json)


@cli.command()
@click.argument("job_id", required=False)
def cancel(job_id):
    """Cancel a job from 'hpc-chat submit' (default: the latest). Exit 1 when the job had
    already ended."""
    from hpc_chat.sites.submit import cancel_job, find_job, job_state

    job = find_job(job_id)
    state = job_state(job)
    if state.ended:
        err_console.print(f"job {job['job_id']} already ended ({state}); nothing to cancel. "
                          f"Answers are in {job['output']}", markup=False, highlight=False)
        sys.exit(1)
    cancel_job(job)
    console.print(f"cancelled job {job['job_id']} (it was {state}); answers so far stay in "
                  f"{job['output']} (resubmit to resume)", markup=False, highlight=False)
    # A driver killed with its job cannot cancel the pilot jobs it submitted: its ledger can.
    from hpc_chat.sites.ledger import clean_dead

    for line in clean_dead(driver_job=job["job_id"]):
        console.print(f"  {line}", markup=False, highlight=False)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only list what is recorded; stop nothing.")
def cleanup(dry_run):
    """Stop what drivers that died left running: their pilot jobs, interchange and worker
    pools, as recorded in $HPC_CHAT_HOME/runs. A driver is known dead when its process on
    this host is gone or the batch job it ran in has ended. Every run does this when it
    starts, and each driver's watchdog does it when its driver dies; this is for doing it
    now."""
    from hpc_chat.sites.ledger import clean_dead

    report = clean_dead(dry_run=dry_run)
    for line in report:
        console.print(line, markup=False, highlight=False)
    if not report:
        console.print("nothing to clean up: no driver known to have died left a run record",
                      markup=False, highlight=False)


@cli.command()
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Runs per figure (the median is reported).")
@click.option("--requests", "n_requests", type=click.IntRange(8, 1000), default=32,
              show_default=True, help="Requests in the throughput batch (64-token answers).")
@click.option("--real-requests", type=click.IntRange(8, 1000), default=64, show_default=True,
              help="Requests in the real workload (the packaged agent's own settings).")
@click.option("--results-dir", default="bench-results", show_default=True,
              type=click.Path(file_okay=False),
              help="Where results.json, performance.md and performance.png go.")
@click.option("--update-docs", is_flag=True,
              help="Also write docs/performance.md, its plot and the README headline of the "
                   "hpc_chat checkout in this directory (what `make bench` does).")
@click.option("--no-slurm", is_flag=True, help="Skip the local-Slurm case.")
@click.option("--report-only", is_flag=True,
              help="Rewrite the report from RESULTS_DIR/results.json without measuring.")
@click.option("--only", type=click.Choice(list(SECTIONS)), default=None,
              help="Measure this section alone into RESULTS_DIR/results.json (the others kept "
                   "from the run that wrote it; the section says when and where it ran).")
def bench(repeats, n_requests, real_requests, results_dir, update_docs, no_slurm,
          report_only, only):
    """Run the benchmark suite; write results JSON, a report (performance.md) and its plot."""
    from hpc_chat.bench.report import plotting_problem, typed, verdicts, write_report
    from hpc_chat.bench.suite import run_suite

    docs, readme = Path(results_dir), None
    if update_docs:
        docs, readme = Path("docs"), Path("README.md")
        if not (docs.is_dir() and readme.is_file()):
            raise CliError("--update-docs writes docs/ and README.md of an hpc_chat checkout: "
                           "run it from the checkout's top directory")
    if report_only or only:
        saved = Path(results_dir) / "results.json"
        if not saved.is_file():
            raise CliError(f"{saved}: no results to report; run 'hpc-chat bench' first")
        try:  # the section --only measures again may be of an older version
            res = typed({k: v for k, v in json.loads(saved.read_text()).items() if k != only})
        except (ValueError, HpcChatError) as exc:
            raise CliError(f"{saved}: not a results file of this version: "
                           f"{str(exc).splitlines()[0]}") from None
        log = lambda text: err_console.print(text, highlight=False)  # noqa: E731
        if only:
            measured = SECTIONS[only].run(repeats, real_requests, log)
            if measured is None:  # what it could not measure it said above; keep the old one
                raise CliError(f"--only {only}: nothing measured, {saved} left as it was")
            res = {**json.loads(saved.read_text()), only: measured}
    else:
        problem = plotting_problem()
        if problem:  # say so before minutes of measuring, not after
            err_console.print(f"note: {problem}; the report will have no plot", highlight=False)
        res = run_suite(repeats=repeats, requests=n_requests, slurm=not no_slurm,
                        real_requests=real_requests,
                        log=lambda text: err_console.print(text, highlight=False))
    for path in write_report(res, Path(results_dir), docs, readme):
        console.print(f"wrote {path}", highlight=False)
    for desc, value, bound, ok in verdicts(res):
        console.print(f"{'[green]met[/]' if ok else '[red]missed[/]'} {desc}: {value:.3g} "
                      f"(target {bound})", highlight=False)
