"""The read-answer loop of ``hpc-chat chat``, with workers of its own or through a server."""

from __future__ import annotations

from collections.abc import Callable

from hpc_chat.cli.app import CliError, console, err_console


def repl(commands: dict[str, Callable[[], None]], answer_line: Callable[[str], None]) -> None:
    """Read lines at ``you>`` until ``/quit``, Ctrl-D, or Ctrl-C at the prompt. A line in
    ``commands`` (``/stats`` ...) runs it; any other line is answered. Ctrl-C while a line is
    answered cancels that answer (``answer_line`` stops its own work) and the session goes on, as
    does a turn that failed with a message of its own."""
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
            if line in commands:
                commands[line]()
            elif line.startswith("/"):
                console.print(f"commands: {' '.join(commands)} /quit")
            else:
                answer_line(line)
        except KeyboardInterrupt:
            err_console.print("(answer cancelled)", style="dim")
        except CliError as exc:  # one failed turn (the server busy, a prompt too long)
            exc.show()
    console.print("bye", style="dim")
