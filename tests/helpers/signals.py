"""Ctrl-C as a user at a terminal sends it, whoever started the tests."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """A ``preexec_fn``: a shell starts background jobs with SIGINT ignored (``make test &``,
    a CI runner's ``nohup``), children inherit that, and Python then never raises
    KeyboardInterrupt; in a terminal it is on. Restore it, so a test's Ctrl-C reaches the
    command."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
