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

import hashlib
import itertools
import json
import os
import stat
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
    fmt, items = iter_batch(path, fmt)
    return BatchInput(list(items), fmt)


def iter_batch(path: str | os.PathLike, fmt: str = "auto"):
    """``(format, items)``: the file's format (from its first lines) and its items, read a line
    at a time as they are iterated (the file is never held whole). What :func:`read_batch`
    raises is raised by the iteration, at its end for repeated custom_ids; a duplicate
    native id is marked on the later line's item."""
    if str(path) == STDIO:
        fh, path = sys.stdin.buffer, Path("<stdin>")
        head = _head(fh, path)
        fmt = detect_format(path, [_unterminated(r) for r in head]) if fmt == "auto" else fmt
        return fmt, _items(itertools.chain(head, fh), path, fmt)
    path = Path(path)
    fh = _open(path)
    try:
        head = _head(fh, path)
    except BaseException:
        fh.close()
        raise
    fmt = detect_format(path, [_unterminated(r) for r in head]) if fmt == "auto" else fmt
    if not rereadable(path):  # a pipe (<(zcat ...)): read once, through this one handle
        return fmt, _held_items(fh, head, path, fmt)
    fh.close()
    return fmt, _file_items(path, fmt)


def rereadable(path: str | os.PathLike) -> bool:
    """Whether the input can be read again (a regular file, not ``-`` or a pipe): a run then
    keeps line numbers, not the lines (:class:`LinesOf`)."""
    try:
        return str(path) != STDIO and stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _held_items(fh, head: list[bytes], path: Path, fmt: str):
    with fh:
        yield from _items(itertools.chain(head, fh), path, fmt)


def _open(path: Path):
    try:
        return path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the input: {exc.strerror or exc}") from None


def _head(fh, path: Path) -> list[bytes]:
    head = list(itertools.islice(fh, 20))
    if not head:
        raise InputError(f"{path}: the input file is empty: nothing to do")
    return head


def _file_items(path: Path, fmt: str):
    with _open(path) as fh:
        yield from _items(fh, path, fmt)


def _unterminated(raw: bytes) -> bytes:
    return (raw[:-1] if raw.endswith(b"\n") else raw).rstrip(b"\r")


def _items(lines, path: Path, fmt: str):
    seen: dict[int, int] = {}  # a 64-bit hash of each id's key -> its first line
    repeated: list[str] = []
    count = 0
    for number, raw in enumerate(lines, start=1):
        item = _parse_line(_unterminated(raw), number, fmt)
        key = key_hash(id_key(item.id))
        if fmt == "openai" and isinstance(item.id, str):  # a line with a custom_id claims it
            if key in seen:
                count += 1
                if len(repeated) < 10:
                    repeated.append(f"custom_id {item.id!r} is on line {seen[key]} and line "
                                    f"{number}")
            seen.setdefault(key, number)
        elif item.error is None:  # a line that cannot run claims no id
            if key in seen:
                item.error = (f"line {number}: duplicate id {item.id!r} (first used on line "
                              f"{seen[key]})")
            seen.setdefault(key, number)
        yield item
    if repeated:
        more = f" (and {count - 10} more)" if count > 10 else ""
        raise InputError(f"{path}: each request needs its own custom_id: "
                         + "; ".join(repeated) + more + ". Nothing was run")


def key_hash(key: str) -> int:
    """A request's key (or custom_id) as 64 bits, for sets of a corpus's lines: a million
    keys cost 8 MB, and two of them meet by chance about once in 10**7 batches of that size."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "big")


class LinesOf:
    """Some lines of an input file, by number, parsed again each time they are iterated."""

    def __init__(self, path: Path, fmt: str, lines, adjust=None):
        self.path, self.fmt, self.lines, self.adjust = path, fmt, lines, adjust

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self):
        wanted = iter(self.lines)
        want = next(wanted, None)
        with _open(self.path) as fh:
            for number, raw in enumerate(fh, start=1):
                if want is None:
                    return
                if number != want:
                    continue
                item = _parse_line(_unterminated(raw), number, self.fmt)
                if self.adjust is not None:
                    self.adjust(item)
                if item.error is not None:  # the line is not what it was when it was read
                    raise InputError(f"{self.path}: line {number} changed while the batch "
                                     f"ran; rerun with --resume")
                yield item
                want = next(wanted, None)
        if want is not None:
            raise InputError(f"{self.path}: the input is shorter than when the batch started "
                             f"(line {want} is gone); rerun with --resume")


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
