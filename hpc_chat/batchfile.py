"""Batch input and output: prompts in, one JSON line per prompt out, resumable.

Input is JSONL (``{"id": ..., "prompt": ...}``, ``id`` optional) or plain text (one prompt per
line); ``-`` is standard input. Every input line yields exactly one output line::

    {"id", "prompt", "ok", "response", "agents", "latency_s", "completion_tokens",
     "prompt_tokens", "finish_reason", "cached", "error", "error_kind", "finished_at"}

written and flushed as soon as that prompt completes, so a killed run loses nothing finished.
A line that cannot be used (bad JSON, no prompt, empty, duplicate id, undecodable bytes) becomes
an ``ok: false`` line and the batch goes on. Lines without an ``id`` get their line number.

``error_kind`` says why a line failed: ``input`` (the line itself: malformed, empty, too long
for the context; final until the line changes) or ``runtime`` (a worker, a timeout, the
scheduler; worth another try). Readers (``hpc-chat stats``, resume) take the last line of each
id; what resume skips is decided in :mod:`hpc_chat.batchrun`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hpc_chat.errors import InputError
from hpc_chat.outputlock import OutputLock
from hpc_chat.stats import RequestRecord, summarize

OUTPUT_KEYS = ("id", "prompt", "ok", "response", "agents", "latency_s", "completion_tokens",
               "prompt_tokens", "finish_reason", "cached", "error", "error_kind")
STDIO = "-"


@dataclass
class BatchItem:
    """One input line: a prompt to answer, or the reason it cannot be answered."""

    id: Any
    prompt: Any
    line: int
    error: str | None = None


def id_key(value: Any) -> str:
    """Ids compare by their JSON form, so ``7`` and ``"7"`` stay distinct but stable."""
    return json.dumps(value, sort_keys=True)


def detect_format(path: Path, lines: list[bytes]) -> str:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    for raw in lines:
        if raw.strip():
            return "jsonl" if raw.lstrip().startswith(b"{") else "text"
    return "text"


def read_batch(path: str | os.PathLike, fmt: str = "auto") -> list[BatchItem]:
    """Parse the input file (``-``: standard input); raises :class:`InputError` only when
    nothing can be read."""
    if str(path) == STDIO:
        data, path = sys.stdin.buffer.read(), Path("<stdin>")
    else:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read the input: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline does not start another line
    if not lines:
        raise InputError(f"{path}: the input file is empty: nothing to do")
    if fmt == "auto":
        fmt = detect_format(path, lines)
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        item = _parse_line(raw.rstrip(b"\r"), number, fmt)
        key = id_key(item.id)
        if item.error is None:  # a line that cannot run claims no id
            if key in seen:
                item.error = (f"line {number}: duplicate id {item.id!r} (first used on line "
                              f"{seen[key]})")
            seen.setdefault(key, number)
        items.append(item)
    return items


def _parse_line(raw: bytes, number: int, fmt: str) -> BatchItem:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return BatchItem(number, None, number, f"line {number}: not UTF-8 text")
    if "\x00" in text:
        return BatchItem(number, None, number, f"line {number}: contains NUL bytes (binary data?)")
    if not text.strip():
        return BatchItem(number, "", number, f"line {number}: empty line, no prompt")
    if fmt == "text":
        return BatchItem(number, text.strip(), number)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return BatchItem(number, None, number, f"line {number}: invalid JSON: {exc.msg} "
                                               f"(column {exc.colno})")
    except (ValueError, RecursionError) as exc:  # a huge number, nesting too deep
        return BatchItem(number, None, number, f"line {number}: unusable JSON: "
                                               f"{str(exc)[:120] or type(exc).__name__}")
    if not isinstance(obj, dict):
        return BatchItem(number, None, number,
                         f"line {number}: expected a JSON object with a \"prompt\" key")
    ident = obj.get("id", number)
    if not isinstance(ident, (str, int)) or isinstance(ident, bool):
        return BatchItem(number, obj.get("prompt"), number,
                         f"line {number}: \"id\" must be a string or an integer")
    if "prompt" not in obj:
        return BatchItem(ident, None, number, f"line {number}: missing \"prompt\"")
    prompt = obj["prompt"]
    if not isinstance(prompt, str):
        return BatchItem(ident, prompt, number,
                         f"line {number}: \"prompt\" must be a string, not "
                         f"{type(prompt).__name__}")
    if not prompt.strip():
        return BatchItem(ident, prompt, number, f"line {number}: empty prompt")
    try:
        prompt.encode("utf-8")
        str(ident).encode("utf-8")
    except UnicodeEncodeError:
        return BatchItem(number, None, number, f"line {number}: invalid Unicode (a lone "
                                               f"surrogate escape such as \\ud800)")
    return BatchItem(ident, prompt, number)


def read_output(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The last output line for each id (unreadable lines, such as a line cut short by a kill,
    are ignored: that prompt simply runs again)."""
    path = Path(path)
    last: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return last
    with path.open("rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError):  # bad JSON or text, huge numbers, deep nesting
                continue
            if isinstance(obj, dict) and "id" in obj and "ok" in obj:
                try:
                    last[id_key(obj["id"])] = obj
                except (ValueError, TypeError, RecursionError):
                    continue
    return last


def answered_ids(path: str | os.PathLike) -> set[str]:
    return {k for k, v in read_output(path).items() if v.get("ok") is True}


def _encode(line: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The line as JSON text, and the line that text says. One that cannot be JSON (an answer
    of a type JSON has no form for) becomes an error line for its id rather than the end of
    the batch."""
    try:
        text = json.dumps(line, ensure_ascii=False)
        text.encode("utf-8")
        return text, line
    except UnicodeEncodeError:  # a lone surrogate from the input: escape it
        return json.dumps(line, ensure_ascii=True), line
    except (TypeError, ValueError, RecursionError) as exc:
        failed = {**dict.fromkeys(OUTPUT_KEYS),
                  **{k: line.get(k) for k in ("id", "prompt", "finished_at")},
                  "ok": False, "agents": [], "error_kind": "runtime",
                  "error": f"the answer could not be written as JSON: "
                           f"{type(exc).__name__}: {exc}"}
        return json.dumps(failed, ensure_ascii=True), failed


class OutputWriter:
    """Appends result lines and flushes each one. Opened before any work starts, so an output
    path that cannot be written fails at once."""

    def __init__(self, path: str | os.PathLike, *, resume: bool):
        self.written = 0
        self.lines: list[dict[str, Any]] = []  # what this run wrote, for its summary
        if str(path) == STDIO:
            if resume:
                raise InputError("--resume needs an output file to resume from, not '-'")
            self.path, self._fh = Path("<stdout>"), sys.stdout
            return
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the output: "
                             f"{exc.strerror or exc}") from None
        self._lock = OutputLock(self.path)  # one run at a time appends to an output
        try:
            if self.path.exists() and not resume and self.path.stat().st_size > 0:
                raise InputError(f"{self.path}: the output file exists; pass --resume to "
                                 f"continue it, or choose another path")
            try:
                self._fh: TextIO = self.path.open("a", encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{self.path}: cannot write the output: "
                                 f"{exc.strerror or exc}") from None
        except BaseException:
            self._lock.release()
            raise
        self._ensure_line_start()

    def _ensure_line_start(self) -> None:
        """A run killed mid-write may leave a partial last line; start on a fresh line."""
        if self.path.stat().st_size == 0:
            return
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                self._fh.write("\n")
                self._fh.flush()

    def write(self, item: BatchItem, result: dict[str, Any] | None, *,
              finished_at: float) -> dict[str, Any]:
        if result is None:
            line = {**dict.fromkeys(OUTPUT_KEYS), "id": item.id, "prompt": item.prompt,
                    "ok": False, "agents": [], "latency_s": 0.0, "completion_tokens": 0,
                    "prompt_tokens": 0, "cached": False, "error": item.error,
                    "error_kind": "input"}
        else:
            line = {"id": item.id, **{k: result.get(k) for k in OUTPUT_KEYS if k != "id"}}
            line["prompt"] = item.prompt
        line["finished_at"] = round(finished_at, 3)
        text, line = _encode(line)
        try:
            self._fh.write(text + "\n")
            self._fh.flush()
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the output ({exc.strerror or exc}); "
                             f"{self.written} lines were written before; free space and rerun "
                             f"with --resume") from None
        self.written += 1
        self.lines.append(line)
        return line

    def close(self) -> None:
        if self._fh is not sys.stdout:
            self._fh.close()
            self._lock.release()


def records_from_lines(lines: Iterable[dict[str, Any]]) -> list[RequestRecord]:
    records = []
    for obj in lines:
        try:
            end = float(obj.get("finished_at") or 0.0)
            latency = float(obj.get("latency_s") or 0.0)
            records.append(RequestRecord(
                ok=obj.get("ok") is True, start=end - latency, end=end,
                completion_tokens=int(obj.get("completion_tokens") or 0),
                prompt_tokens=int(obj.get("prompt_tokens") or 0),
                cached=obj.get("cached") is True,
                agents=tuple(str(a) for a in obj.get("agents") or ())))
        except (TypeError, ValueError, OverflowError):
            continue  # a hand-edited line with numbers that are not numbers
    return records


def stats_from_output(path: str | os.PathLike) -> dict[str, Any]:
    """``hpc-chat stats``: the statistics of a finished (or partial) batch output."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such batch output file")
    last = read_output(path)
    if not last:
        raise InputError(f"{path}: no result lines found: every line of a batch output has "
                         f"\"id\" and \"ok\" (is this the input file?)")
    summary = summarize(records_from_lines(last.values()))
    del summary["model_loads"]  # not recorded in output lines
    return summary
