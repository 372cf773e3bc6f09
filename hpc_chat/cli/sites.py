"""``sites`` (profiles: list, show, validate, render, test) and ``endpoint`` (Globus Compute)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hpc_chat.cli.app import CliError, cli, console, err_console
from hpc_chat.cli.output import rule, warn_placeholders
from hpc_chat.errors import HpcChatError


@cli.group()
def sites():
    """Site profiles: list, show, validate, render (dry run), test (a real pilot job)."""


@sites.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def sites_list(as_json):
    """Every profile on the search path."""
    from hpc_chat.sites.registry import all_profiles, load_profile, search_path

    rows = []
    for name, path in sorted(all_profiles().items()):
        try:
            p = load_profile(path)
            rows.append({"site": name, "path": str(path), "valid": True,
                         "scheduler": p.scheduler, "launcher": p.launcher,
                         "description": p.description, "placeholders": p.placeholders()})
        except HpcChatError as exc:
            rows.append({"site": name, "path": str(path), "valid": False, "error": str(exc)})
    if as_json:
        click.echo(json.dumps({"sites": rows, "search_path": [str(d) for d in search_path()]},
                              indent=2))
        return
    table = Table("site", "scheduler", "launcher", "description")
    for r in rows:
        if r["valid"]:
            table.add_row(Text(r["site"]), r["scheduler"], r["launcher"], Text(r["description"]))
        else:
            table.add_row(Text(r["site"]), Text("invalid", style="red"), "",
                          Text("run: hpc-chat sites validate " + r["site"]))
    console.print(table)
    console.print("search path: " + ":".join(str(d) for d in search_path()), style="dim",
                  markup=False)


@sites.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True,
              help="The validated profile as JSON (every key, defaults filled in).")
def sites_show(name, as_json):
    """Print a profile file and where it was found."""
    from hpc_chat.sites.registry import find_profile, load_profile

    path = find_profile(name)
    profile = load_profile(path)
    if as_json:
        click.echo(json.dumps({"path": str(path), "scheduler": profile.scheduler,
                               "placeholders": profile.placeholders(),
                               "profile": profile.model_dump(mode="json")}, indent=2))
        return
    console.print(f"[bold]{escape(profile.name)}[/] ({profile.scheduler}, {profile.launcher}) from "
                  f"{path}", highlight=False)
    click.echo(path.read_text())
    warn_placeholders(profile, "submitting")


@sites.command("new")
@click.argument("name")
@click.option("--from", "template", default="generic-slurm", show_default=True,
              metavar="SITE", help="The profile to start from (hpc-chat sites list).")
@click.option("--force", is_flag=True,
              help="Allow a name that hides a profile shipped with hpc_chat (e.g. local).")
def sites_new(name, template, force):
    """Start a profile of your own: copy SITE to $HPC_CHAT_HOME/sites/NAME.yaml with
    `name: NAME`, and list the values to fill in."""
    from hpc_chat.sites.registry import new_profile

    path, profile = new_profile(name, template, force=force)
    console.print(f"wrote {path} (from {template})", markup=False, highlight=False)
    problems = profile.placeholders()
    if problems:
        console.print("edit these values, then run: hpc-chat sites validate " + name,
                      markup=False)
        for problem in problems:
            console.print(f"  {problem}", markup=False, highlight=False)
    console.print(f"then try it: hpc-chat sites test {name}", markup=False)


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
            label = "error" if "not found" in str(exc) else "invalid"
            err_console.print(f"[bold red]{label}:[/] {escape(str(exc))}", highlight=False)
            continue
        notes = profile.placeholders()
        extra = f" ({len(notes)} placeholder values to edit before submitting)" if notes else ""
        console.print(f"[green]ok[/] {escape(profile.name)}: {escape(profile.source)}{extra}",
                      highlight=False)
    if bad:
        raise CliError(f"{bad} of {len(targets)} profiles are invalid or missing")


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
    rule(f"Parsl executor for {profile.name}")
    click.echo(render_parsl_config(profile))
    command, script = render_pilot_script(profile)
    rule("Pilot job (written by Parsl's provider)")
    click.echo(f"# submitted with: {command}")
    click.echo(script)
    if profile.scheduler != "local":
        rule("Driver job (hpc-chat submit)")
        click.echo(render_driver_script(profile, input_path, output_path).script)
    warn_placeholders(profile, "submitting")


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
    from hpc_chat.driver.site_check import DEFAULT_MODEL, check_site

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
    warn_placeholders(profile, "starting the endpoint")


@endpoint.command("login")
def endpoint_login():
    """Log in to Globus Compute (opens the SDK's browser login flow)."""
    from hpc_chat.globus.client import login

    login()
    console.print("logged in to Globus Compute")
