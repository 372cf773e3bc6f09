"""A Batch API batch's files: its input read a line at a time and validated, and what its
output and error files already hold (after a restart, the requests not to answer again).

Nothing here holds a file whole: a million-line batch costs a set of 64-bit hashes of its
custom_ids, not its lines.
"""

from __future__ import annotations

import bisect
import json
import os
from array import array
from pathlib import Path
from typing import Any

from hpc_chat.batch.input import key_hash, parse_openai_line
from hpc_chat.batch.output import json_lines

MAX_ERRORS = 1000  # bad lines named in a failed batch's errors (the count says how many)


class IdSet:
    """Hashed custom_ids, sorted in an array (8 bytes each, not a set's ~70)."""

    def __init__(self, hashes: array):
        self.hashes = array("Q", sorted(hashes))

    def __contains__(self, custom_id: str) -> bool:
        h = key_hash(custom_id)
        at = bisect.bisect_left(self.hashes, h)
        return at < len(self.hashes) and self.hashes[at] == h

    def __len__(self) -> int:
        return len(self.hashes)


def requests(path: Path, chunk: int = 256):
    """The input's requests in lists of up to ``chunk``: a :class:`BatchItem` per line, None
    for a blank one. Validation and the run both parse lines here, in a thread of their own
    (``asyncio.to_thread``), so a line parses the same way in both, at the same stack depth
    (a JSON value nested nearly to the recursion limit fails, or not, in both), and the
    event loop is not held by the parsing."""
    found: list = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                found.append(None)
            else:
                found.append(parse_openai_line(raw.decode("utf-8", "replace"), number))
            if len(found) >= chunk:
                yield found
                found = []
    if found:
        yield found


def validate(path: Path, endpoint: str) -> tuple[int, list[dict[str, Any]], str | None]:
    """The number of requests in ``path``, the errors that fail the whole batch (each naming
    its line), and the first request's model. Run in a thread (see :func:`requests`)."""
    hashes = array("Q")
    errors: list[dict[str, Any]] = []
    bad, total, model = 0, 0, None

    def refuse(number: int, message: str, param: str | None, code: str) -> None:
        nonlocal bad
        bad += 1
        if len(errors) < MAX_ERRORS:
            errors.append({"code": code, "message": message, "param": param, "line": number})

    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            total += 1
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                refuse(number, f"line {number}: not JSON ({str(exc)[:120]})", None,
                       "invalid_json_line")
                continue
            if not isinstance(obj, dict):
                refuse(number, f"line {number}: not a JSON object", None, "invalid_request")
                continue
            url, method = obj.get("url"), obj.get("method", "POST")
            cid = obj.get("custom_id")
            if not isinstance(cid, str) or not cid:
                refuse(number, f"line {number}: \"custom_id\" must be a non-empty string",
                       "custom_id", "missing_required_parameter")
            elif parse_openai_line(raw.decode("utf-8"), number).id is None:
                refuse(number, f"line {number}: cannot be read as a request (nested too "
                               f"deep?)", None, "invalid_request")
            else:
                hashes.append(key_hash(cid))
            if method != "POST" or url != endpoint:
                refuse(number, f"line {number}: the batch's endpoint is POST {endpoint}, this "
                               f"line asks for {method} {url}", "url", "invalid_url")
            elif not isinstance(obj.get("body"), dict):
                refuse(number, f"line {number}: \"body\" must be a JSON object", "body",
                       "invalid_request")
            elif model is None and isinstance(obj["body"].get("model"), str):
                model = obj["body"]["model"]
    for number, cid, first in _repeated(path, hashes):
        refuse(number, f"line {number}: custom_id {cid!r} is also on line {first}; each "
                       f"request needs its own", "custom_id", "duplicate_custom_id")
    errors.sort(key=lambda e: e["line"])
    if bad > len(errors):
        errors.append({"code": "too_many_errors", "line": None, "param": None,
                       "message": f"{bad} lines cannot be requests; the first "
                                  f"{len(errors)} are listed"})
    if total == 0:
        errors.append({"code": "empty_file", "line": None, "param": None,
                       "message": "the input file has no requests"})
    return total, errors, model


def _repeated(path: Path, hashes: array):
    """(line, custom_id, first line) of each custom_id used before: the hashes sorted find
    whether any repeats (8 bytes a line); only then is the file read again for their lines."""
    ordered = sorted(hashes)
    twice = {a for a, b in zip(ordered, ordered[1:]) if a == b}
    if not twice:
        return
    first: dict[str, int] = {}
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                cid = json.loads(raw).get("custom_id")
            except (ValueError, RecursionError, AttributeError):
                continue
            if isinstance(cid, str) and cid and key_hash(cid) in twice:
                if cid in first:
                    yield number, cid, first[cid]
                else:
                    first[cid] = number


def written(work: Path) -> tuple[IdSet, tuple[int, int], dict[str, Any]]:
    """What a batch's output and error files already hold: the custom_ids (hashed), the
    answered and failed counts, the answers' usage. A last line cut short by a kill is cut
    off: its request runs again."""
    done = array("Q")
    counts = [0, 0]
    usage = empty_usage()
    for index, name in enumerate(("output.jsonl", "errors.jsonl")):
        path = work / name
        if path.exists():
            cut_partial_line(path)
        for obj in json_lines(path):
            if isinstance(obj.get("custom_id"), str):
                done.append(key_hash(obj["custom_id"]))
                counts[index] += 1
                if index == 0:
                    add_usage(usage, obj)
    return IdSet(done), (counts[0], counts[1]), usage


def cut_partial_line(path: Path) -> None:
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        keep = size
        while keep > 0:
            step = min(65536, keep)
            fh.seek(keep - step)
            chunk = fh.read(step)
            at = chunk.rfind(b"\n")
            if at >= 0:
                keep = keep - step + at + 1
                break
            keep -= step
        if keep != size:
            fh.truncate(keep)


def empty_usage() -> dict[str, Any]:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def add_usage(usage: dict[str, Any], output_line: dict[str, Any]) -> None:
    body = (output_line.get("response") or {}).get("body") or {}
    got = body.get("usage") if isinstance(body, dict) else None
    if isinstance(got, dict):
        # A chat or text completion's usage, or a response's (input_/output_tokens).
        prompt = int(got.get("prompt_tokens", got.get("input_tokens")) or 0)
        completion = int(got.get("completion_tokens", got.get("output_tokens")) or 0)
        details = got.get("prompt_tokens_details", got.get("input_tokens_details"))
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
        usage["input_tokens"] += prompt
        usage.setdefault("input_tokens_details", {"cached_tokens": 0})["cached_tokens"] += cached
        usage["output_tokens"] += completion
        usage["total_tokens"] += prompt + completion


class Appender:
    """A batch's output or error file, appended to a whole line at a time (created 0600 on
    first use): one ``write`` on an ``O_APPEND`` descriptor, so a kill leaves at most one line
    cut short (cut off at the next start), and a line that cannot be written whole (a full
    disk) is taken back and raises: the batch stops, nothing half-written stays."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def __enter__(self):
        return self

    def write(self, text: str) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW |
                              os.O_CLOEXEC, 0o600)
        data = text.encode("utf-8")
        size = os.fstat(self.fd).st_size
        try:
            if os.write(self.fd, data) != len(data):
                raise OSError(f"{self.path}: a line was written only in part")
        except OSError:
            os.ftruncate(self.fd, size)
            raise

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
