"""The ``hpc-chat`` command line: the group in :mod:`hpc_chat.cli.app`, one module per family
of commands. Commands parse, call the module that owns the work, and print.

The command modules are imported by :func:`main`, not when this package is: loading them
(Parsl, pydantic, FastAPI) takes a second or two on a busy login node, and a Ctrl-C in that
second must end the command as quietly as one a minute later does, with 130 and no traceback.
"""

from __future__ import annotations

import sys


def _group():
    from hpc_chat.cli import batch, batches, chat, embed, jobs, models, serve, sites  # noqa: F401
    from hpc_chat.cli.app import cli

    return cli


def main() -> None:
    try:
        cli = _group()
    except KeyboardInterrupt:
        sys.exit(130)
    cli(prog_name="hpc-chat")


def __getattr__(name: str):
    if name == "cli":  # the click group, every command registered (tests use it directly)
        return _group()
    raise AttributeError(name)


__all__ = ["cli", "main"]
