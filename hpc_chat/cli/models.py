"""``models``: every model name a user may write, what it points at, and whether it is here."""

from __future__ import annotations

import json

import click
from rich.table import Table
from rich.text import Text

from hpc_chat.cli.app import CliError, HpcChatGroup, cli, console


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


@cli.group(cls=HpcChatGroup, invoke_without_command=True)
@click.option("--site", default=None, metavar="NAME", envvar="HPC_CHAT_SITE",
              help="Also the aliases of this site profile (default: $HPC_CHAT_SITE).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def models(ctx, site, as_json):
    """Model names and aliases, what each points at, its size, and whether it is present
    (and, with ``convert``, a model file in another weight format)."""
    ctx.obj = {"site": site}
    if ctx.invoked_subcommand is not None:
        return
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


@models.command()
@click.argument("name")
@click.option("--to", "to", required=True, type=click.Choice(["q4_0", "iq4_nl", "q8_0"]),
              help="The weight format to write (llama.cpp's quantizer).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write it (default: $HPC_CHAT_HOME/models/STEM.FORMAT.gguf).")
@click.option("--force", is_flag=True, help="Replace the output when it exists.")
@click.pass_context
def convert(ctx, name, to, output, force):
    """Write model NAME (a name, an alias or a .gguf path) in another weight format.

    Q4_0 and IQ4_NL have llama.cpp's repacked AVX2 kernels, which the embedded Q4_1 lacks;
    `hpc-chat bench --only formats` measures each one's speed and perplexity. From an
    F16/BF16/F32 file this is a plain quantization; from an already quantized one (the
    embedded model) a requantization, which loses a little more: it is said, and done."""
    from pathlib import Path

    from hpc_chat.llm.convert import convert as convert_model
    from hpc_chat.llm.echo import is_echo
    from hpc_chat.llm.models import model_location, remote_model
    from hpc_chat.util.paths import home_subdir

    aliases = {}
    if ctx.obj and ctx.obj.get("site"):
        from hpc_chat.sites.registry import load_profile

        aliases = load_profile(ctx.obj["site"]).model.aliases
    if remote_model(name) is not None:
        raise CliError(f"{name}: a model served elsewhere; only a local GGUF file converts")
    location = model_location(name, aliases)
    if is_echo(location):
        raise CliError(f"{name}: the built-in echo model has no weights to convert")
    source = Path(location)
    stem = source.name.removesuffix(".gguf")
    target = Path(output) if output else home_subdir("models") / f"{stem}.{to}.gguf"
    done = convert_model(source, to, target, force=force)
    if done.requantized:
        console.print(f"note: {source.name} is already quantized ({done.source_type}); "
                      f"requantizing to {to} loses a little more than quantizing from F16",
                      markup=False, highlight=False)
    console.print(f"wrote {done.output} ({done.bytes / 1e6:.0f} MB, {to} from "
                  f"{done.source_type})", markup=False, highlight=False)
    console.print(f"use it with --model {done.output}, or name it in $HPC_CHAT_HOME/models.yaml",
                  style="dim", markup=False, highlight=False)
