"""Batch progress: a rich bar on a terminal, plain periodic lines otherwise (batch jobs' logs)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY_S = 10.0


class BatchProgress:
    """Counts only the prompts this run sends to workers (lines that failed before any work are
    reported apart), so the rate and the time left measure real work."""

    def __init__(self, total: int, *, console: Console | None = None):
        self.total, self.done, self.failed = total, 0, 0
        self._initial = 0
        self._status = ""
        self.console = console or Console(stderr=True)
        self.start = time.monotonic()
        self._last_plain = 0.0
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> BatchProgress:
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("[bold]answering"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[status]}", markup=False),
                                 console=self.console)
            self._bar.start()
            self._task = self._bar.add_task("batch", total=self.total, completed=self.done,
                                            failed=self.failed, rate="", status="")
        return self

    def status(self, text: str) -> None:
        """What the run waits for (the scheduler's state of the pilot job), or '' when none."""
        if text == self._status:
            return
        self._status = text
        if self._bar is not None:
            self._bar.update(self._task, status=text)
        elif text:
            self.console.print(text, highlight=False, markup=False)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return (self.done - self._initial) / elapsed if elapsed > 0 else 0.0

    def advance(self, *, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, failed=self.failed,
                             rate=f"{self.rate():.2f}/s")
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_EVERY_S or self.done == self.total:
            self._last_plain = now
            self.console.print(f"progress: {self.done}/{self.total} done, {self.failed} failed, "
                               f"{self.rate():.2f} req/s", highlight=False)

    def print(self, renderable) -> None:
        """Print above the bar on a terminal; to standard output otherwise."""
        if self._bar is not None:
            self._bar.console.print(renderable)
        else:
            Console().print(renderable)

    def stop(self) -> None:
        """Take the bar off the screen (before a summary is printed under it)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __exit__(self, *exc) -> None:
        self.stop()
