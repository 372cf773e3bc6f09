"""``models``: every model name a user may write, what it points at, and whether it is here."""

from __future__ import annotations

import json

import click
from rich.table import Table
from rich.text import Text

from hpc_chat.cli.app import cli, console


def model_rows(site: str | None) -> list[dict]:
    from hpc_chat.errors import HpcChatError
    from hpc_chat.llm.echo import is_echo
    from hpc_chat.llm.models import (
        BUILTIN_ALIASES,
        available_models,
        model_location,
        remote_model,
    )

    aliases, where = {}, "built-in"
    if site:
        from hpc_chat.sites.registry import load_profile

        profile = load_profile(site)
        aliases = profile.model.aliases
        where = profile.source
    rows = []
    for name, target in sorted(available_models(aliases).items()):
        row = {"name": name, "points_at": target, "source": "built-in"
               if name in BUILTIN_ALIASES or name == "echo" else
               (where if name in aliases else "$HPC_CHAT_HOME/models.yaml"),
               "path": None, "bytes": None, "present": False, "problem": None}
        try:
            if remote_model(name) is not None:  # served elsewhere: nothing to find here
                row["present"] = True
                rows.append(row)
                continue
            location = model_location(name, aliases)
        except HpcChatError as exc:
            row["problem"] = str(exc)
        else:
            row["present"] = True
            if not is_echo(location):
                from pathlib import Path

                row["path"], row["bytes"] = location, Path(location).stat().st_size
        rows.append(row)
    return rows


@cli.command()
@click.option("--site", default=None, metavar="NAME", envvar="HPC_CHAT_SITE",
              help="Also the aliases of this site profile (default: $HPC_CHAT_SITE).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models(site, as_json):
    """Model names and aliases, what each points at, its size, and whether it is present."""
    rows = model_rows(site)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "points at", "size", "present", "defined in")
    for r in rows:
        size = f"{r['bytes'] / 1e6:.0f} MB" if r["bytes"] else (
            "remote" if r["points_at"].startswith("openai:") else
            "no file" if r["present"] else "")
        table.add_row(Text(r["name"]), Text(r["path"] or r["points_at"]), size,
                      Text("yes", style="green") if r["present"] else
                      Text("missing", style="red"), Text(r["source"]))
    console.print(table)
    console.print("use a name with --model NAME, an agent's config.model or a site profile's "
                  "model.model; add aliases in $HPC_CHAT_HOME/models.yaml", style="dim",
                  markup=False)
