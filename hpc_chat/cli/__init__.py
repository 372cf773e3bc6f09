"""The ``hpc-chat`` command line: the group in :mod:`hpc_chat.cli.app`, one module per family
of commands. Commands parse, call the module that owns the work, and print."""

from hpc_chat.cli import batch, chat, jobs, models, serve, sites  # noqa: F401  (registers commands)
from hpc_chat.cli.app import cli


def main() -> None:
    cli(prog_name="hpc-chat")


__all__ = ["cli", "main"]
