"""Batch input: a file of prompts, one :class:`BatchItem` per line, every line accounted for.

Input is JSONL (``{"id": ..., "prompt": ...}``, ``id`` optional), plain text (one prompt per
line) or OpenAI batch request lines (:mod:`hpc_chat.openai.batch`), detected per file; ``-`` is
standard input. A line that cannot be used (bad JSON, no prompt, empty, duplicate id,
undecodable bytes) becomes an item with an error, written as an ``ok: false`` line
(:mod:`hpc_chat.batch.output`), and the batch goes on. Lines without an ``id`` get their line
number; a line too broken to have an id is written with ``"id": null``, and resume knows it by
``line``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_chat.errors import InputError
from hpc_chat.openai import batch as oa

STDIO = "-"


@dataclass(slots=True)
class BatchItem:
    """One input line: a prompt to answer, or the reason it cannot be answered. (Slots: a
    million-line batch holds a million of them.)"""

    id: Any
    prompt: Any
    line: int
    error: str | None = None
    request: oa.ChatRequest | None = None  # an OpenAI batch line, checked
    problem: oa.RequestError | None = None  # why that line cannot run: its key and status
    key: str | None = None  # an OpenAI line's fingerprint: an edited line is another request

    @property
    def fingerprint(self) -> Any:
        """What resume compares with the answered request: the prompt, or an OpenAI line's
        fingerprint."""
        return self.key if self.key is not None else self.prompt


class BatchInput(list):
    """The items of an input file, and the format they were read in."""

    def __init__(self, items: list[BatchItem], fmt: str):
        super().__init__(items)
        self.format = fmt


def id_key(value: Any) -> str:
    """Ids compare by their JSON form, so ``7`` and ``"7"`` stay distinct but stable."""
    return json.dumps(value, sort_keys=True)


def item_key(item: BatchItem) -> str:
    """What resume matches an input line with: its id, or, for a line too broken to have one
    (its output line says ``"id": null``), its line number, which no id can clash with."""
    return id_key(item.id) if item.id is not None else id_key({"line": item.line})


def detect_format(path: Path, lines: list[bytes]) -> str:
    """``openai`` when the first JSON object among the first lines is an OpenAI batch request;
    else ``jsonl`` for a .jsonl name or a first line starting with ``{``; else ``text``."""
    first = next((raw for raw in lines if raw.strip()), b"")
    for raw in [raw for raw in lines[:20] if raw.strip()]:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            if oa.is_request_line(obj):
                return "openai"
            break
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if first.lstrip().startswith(b"{") else "text"


def read_batch(path: str | os.PathLike, fmt: str = "auto") -> BatchInput:
    """Parse the input file (``-``: standard input); raises :class:`InputError` only when
    nothing can be read, or when an OpenAI file repeats a ``custom_id`` (the answers could
    not be told apart: nothing runs)."""
    if str(path) == STDIO:
        fh, path = sys.stdin.buffer, Path("<stdin>")
    else:
        path = Path(path)
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise InputError(f"{path}: cannot read the input: {exc.strerror or exc}") from None
    # Read a line at a time (the file is never held whole); the format from the first lines.
    head = list(itertools.islice(fh, 20))
    if not head:
        if fh is not sys.stdin.buffer:
            fh.close()
        raise InputError(f"{path}: the input file is empty: nothing to do")
    if fmt == "auto":
        fmt = detect_format(path, [_unterminated(raw) for raw in head])
    with fh if fh is not sys.stdin.buffer else contextlib.nullcontext(fh):
        return _read_items(itertools.chain(head, fh), path, fmt)


def _unterminated(raw: bytes) -> bytes:
    return (raw[:-1] if raw.endswith(b"\n") else raw).rstrip(b"\r")


def _read_items(lines, path: Path, fmt: str) -> BatchInput:
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    repeated: list[str] = []
    for number, raw in enumerate(lines, start=1):
        item = _parse_line(_unterminated(raw), number, fmt)
        key = id_key(item.id)
        if fmt == "openai" and isinstance(item.id, str):  # a line with a custom_id claims it
            if key in seen:
                repeated.append(f"custom_id {item.id!r} is on line {seen[key]} and line "
                                f"{number}")
            seen.setdefault(key, number)
        elif item.error is None:  # a line that cannot run claims no id
            if key in seen:
                item.error = (f"line {number}: duplicate id {item.id!r} (first used on line "
                              f"{seen[key]})")
            seen.setdefault(key, number)
        items.append(item)
    if repeated:
        more = f" (and {len(repeated) - 10} more)" if len(repeated) > 10 else ""
        raise InputError(f"{path}: each request needs its own custom_id: "
                         + "; ".join(repeated[:10]) + more + ". Nothing was run")
    return BatchInput(items, fmt)


def _parse_line(raw: bytes, number: int, fmt: str) -> BatchItem:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return BatchItem(None, None, number, f"line {number}: not UTF-8 text")
    if "\x00" in text:
        return BatchItem(None, None, number, f"line {number}: contains NUL bytes (binary data?)")
    if not text.strip():
        return BatchItem(None, "", number, f"line {number}: empty line, no prompt")
    if fmt == "text":
        return BatchItem(number, text.strip(), number)
    if fmt == "openai":
        return parse_openai_line(text, number)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return BatchItem(None, None, number, f"line {number}: invalid JSON: {exc.msg} "
                                               f"(column {exc.colno})")
    except (ValueError, RecursionError) as exc:  # a huge number, nesting too deep
        return BatchItem(None, None, number, f"line {number}: unusable JSON: "
                                               f"{str(exc)[:120] or type(exc).__name__}")
    if not isinstance(obj, dict):
        return BatchItem(None, None, number,
                         f"line {number}: expected a JSON object with a \"prompt\" key")
    ident = obj.get("id", number)
    if not isinstance(ident, (str, int)) or isinstance(ident, bool):
        return BatchItem(None, obj.get("prompt"), number,
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
        return BatchItem(None, None, number, f"line {number}: invalid Unicode (a lone "
                                               f"surrogate escape such as \\ud800)")
    return BatchItem(ident, prompt, number)


def parse_openai_line(text: str, number: int) -> BatchItem:
    """An OpenAI request line (``number``: its line number, from 1). A line that cannot run
    keeps its custom_id when it has one, so its error entry can be matched to it."""
    def bad(message: str, obj: Any = None, problem: oa.RequestError | None = None) -> BatchItem:
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        ident = cid if isinstance(cid, str) and cid else None
        return BatchItem(ident, None, number, f"line {number}: {message}", problem=problem,
                         key=oa.fingerprint(obj if obj is not None else text))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return bad(f"invalid JSON: {exc.msg} (column {exc.colno})")
    except (ValueError, RecursionError) as exc:
        return bad(f"unusable JSON: {str(exc)[:120] or type(exc).__name__}")
    if not isinstance(obj, dict):
        return bad("expected a JSON object (an OpenAI batch request)")
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        req = oa.parse_request(obj)
    except UnicodeEncodeError:
        return bad("invalid Unicode (a lone surrogate escape such as \\ud800)", obj)
    except oa.RequestError as exc:
        return bad(str(exc), obj, exc)
    except (RecursionError, ValueError) as exc:  # nested too deep to handle, huge numbers
        return bad(f"unusable JSON: {str(exc)[:120] or type(exc).__name__}")
    return BatchItem(req.custom_id, req.prompt, number, request=req, key=req.fingerprint)
