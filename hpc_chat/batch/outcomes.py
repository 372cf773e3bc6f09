"""The last outcome of each request in a batch output, indexed on disk.

``--resume``, ``hpc-chat stats``, ``hpc-chat status`` and ``embed --npy`` read an output file
(and, for an OpenAI output, its errors file) for the last outcome of each id. A million-line
output holds a million answers with their provenance; kept as dicts they took gigabytes of a
login node's memory. Here one pass reads the files a line at a time into an SQLite index in a
private temporary directory (``mkdtemp``, 0700; removed on :meth:`OutcomeIndex.close`): per id,
what resume compares (digests of the answered request and of the prompt, ``ok``,
``error_kind``) and where the line is, so a whole line is read back only when it is needed
(an answer copied to a moved line, the vectors of ``--npy``, the figures of ``stats``). The
driver's memory stays flat in the number of lines.

Which outcome is the last: native lines in file order; OpenAI output and error lines by their
``finished_at``, then their order (the errors file after the output).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from hpc_chat.errors import InputError
from hpc_chat.openai import batch_output as ob

SCHEMA = """
CREATE TABLE last (
    key TEXT PRIMARY KEY,  -- the id's JSON (batch.input.item_key)
    fin REAL, seq INTEGER,  -- which outcome is the last: (finished_at, order in the files)
    first_fin REAL, first_seq INTEGER,  -- where the id first appeared: the order of lines()
    file INTEGER, off INTEGER,  -- the last outcome's line: output (0) or errors file (1)
    ok INTEGER, kind TEXT,  -- whether it was answered; error_kind when not
    request BLOB,  -- digest of what was answered: the prompt, or an OpenAI line's fingerprint
    prompt BLOB,  -- digest of the prompt when it is a string (a native line), else NULL
    answered INTEGER  -- ok with a string prompt: may be copied to a moved line
) WITHOUT ROWID;
"""
UPSERT = """
INSERT INTO last VALUES (:key, :fin, :seq, :fin, :seq, :file, :off, :ok, :kind, :request,
                         :prompt, :answered)
ON CONFLICT(key) DO UPDATE SET fin = excluded.fin, seq = excluded.seq, file = excluded.file,
    off = excluded.off, ok = excluded.ok, kind = excluded.kind, request = excluded.request,
    prompt = excluded.prompt, answered = excluded.answered
WHERE (excluded.fin, excluded.seq) > (last.fin, last.seq)
"""
CHUNK = 2000  # rows per executemany: a bounded list, whatever the file's size


class Outcome(NamedTuple):
    """What resume needs of an id's last outcome."""

    ok: bool
    error_kind: str | None
    request: bytes  # :func:`digest` of the answered request's fingerprint
    prompt: bytes | None  # :func:`digest` of its prompt, when a string


def digest(value: Any) -> bytes:
    """128 bits of a JSON value (a prompt, a fingerprint): what resume compares."""
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()


def errors_path(output: str | Path) -> Path:
    """Where an OpenAI-format run writes its failed requests: ``out.jsonl`` ->
    ``out.errors.jsonl``."""
    p = Path(output)
    stem = p.name[:-len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.errors{p.suffix or '.jsonl'}")


def line_key(obj: dict[str, Any]) -> str | None:
    """:func:`~hpc_chat.batch.input.item_key` of the input line an output line (or an OpenAI
    outcome) answers."""
    if obj.get("id") is None:
        return _json_key({"line": obj["line"]}) if isinstance(obj.get("line"), int) else None
    return _json_key(obj["id"])


def _json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _finished(outcome: dict[str, Any]) -> float:
    """An OpenAI outcome's finish time, 0.0 for one a hand edit made unusable (NaN, huge)."""
    value = outcome.get("finished_at")
    try:
        value = float(value) if isinstance(value, (int, float)) else 0.0
    except OverflowError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def outcome_of(obj: Any, file: int) -> dict[str, Any] | None:
    """A line of the output (``file`` 0) or errors file (1) in native terms, None when it is no
    request's outcome."""
    if not isinstance(obj, dict):
        return None
    if ob.is_output_line(obj):
        return ob.outcome(obj)
    return obj if file == 0 and "id" in obj and "ok" in obj else None


class OutcomeIndex:
    """The last outcome of each id of ``output`` (see the module)."""

    def __init__(self, output: str | Path):
        self.paths = (Path(output), errors_path(output))
        self._db = None
        # Both files stay open while the index is used: a line is read back from the file
        # that was indexed, even if the path is replaced meanwhile (compact_openai).
        self._files = [path.open("rb") if path.exists() else None for path in self.paths]
        self._dir = tempfile.mkdtemp(prefix="hpc_chat-outcomes-")
        try:
            self._db = sqlite3.connect(Path(self._dir) / "index.sqlite")
            self._db.execute("PRAGMA journal_mode = OFF")
            self._db.execute("PRAGMA synchronous = OFF")
            self._db.executescript(SCHEMA)
            with self._db:
                self._fill()
            self._db.execute("CREATE INDEX answered_prompts ON last (prompt) WHERE answered")
        except sqlite3.Error as exc:
            self.close()
            raise InputError(f"{output}: cannot index its answers in {self._dir} ({exc}); "
                             f"set TMPDIR to a directory with room (the index takes about "
                             f"150 bytes a line)") from None
        except BaseException:
            self.close()
            raise

    def _fill(self) -> None:
        rows: list[dict[str, Any]] = []
        for file, off, seq, openai, found in self._outcomes():
            try:
                key = line_key(found)
            except (ValueError, TypeError, RecursionError):
                continue
            if key is None:
                continue
            native = "prompt" in found
            prompt = found.get("prompt")
            ok = found.get("ok") is True
            try:
                request = digest(found.get("request", prompt))
                answered_prompt = digest(prompt) if native else None
            except (ValueError, TypeError, RecursionError):
                continue  # a hand-edited line JSON cannot write again: its request runs again
            rows.append({
                "key": key, "fin": _finished(found) if openai else 0.0,  # native: file order
                "seq": seq, "file": file, "off": off, "ok": ok,
                "kind": found.get("error_kind") if isinstance(found.get("error_kind"), str)
                else None,
                "request": request, "prompt": answered_prompt,
                "answered": ok and isinstance(prompt, str)})
            if len(rows) >= CHUNK:
                self._db.executemany(UPSERT, rows)
                rows.clear()
        self._db.executemany(UPSERT, rows)

    def _outcomes(self) -> Iterator[tuple[int, int, int, bool, dict[str, Any]]]:
        """``(file, offset, sequence, OpenAI?, outcome)`` of every outcome line of both
        files."""
        seq = 0
        for file, fh in enumerate(self._files):
            if fh is None:
                continue
            off = 0
            for raw in fh:
                at, off = off, off + len(raw)
                seq += 1
                try:
                    obj = json.loads(raw)
                except (ValueError, RecursionError):
                    continue  # cut short by a kill, or not JSON: that request runs again
                found = outcome_of(obj, file)
                if found is not None:
                    yield file, at, seq, found is not obj, found

    def get(self, key: str) -> Outcome | None:
        row = self._db.execute("SELECT ok, kind, request, prompt FROM last WHERE key = ?",
                               (key,)).fetchone()
        return None if row is None else Outcome(bool(row[0]), row[1], row[2], row[3])

    def answered_at(self, prompt: str) -> int | None:
        """Where the last answered line whose prompt is ``prompt`` is (for :meth:`read`)."""
        row = self._db.execute(
            "SELECT file, off FROM last WHERE prompt = ? AND answered "
            "ORDER BY first_fin DESC, first_seq DESC LIMIT 1", (digest(prompt),)).fetchone()
        return None if row is None else row[1] * 2 + row[0]

    def read(self, position: int) -> dict[str, Any]:
        """The outcome at ``position`` (from :meth:`answered_at`), read back."""
        found = self._read(position % 2, position // 2)
        if found is None:
            raise InputError(f"{self.paths[position % 2]}: changed while it was resumed; "
                             f"run again with --resume")
        return found

    def lines(self) -> Iterator[dict[str, Any]]:
        """Each id's last outcome (read back), in the order the ids first appear."""
        rows = self._db.execute("SELECT key, file, off FROM last ORDER BY first_fin, first_seq")
        for key, file, off in rows:
            found = self._read(file, off)
            try:
                if found is not None and line_key(found) == key:  # else: changed since
                    yield found
            except (ValueError, TypeError, RecursionError):
                continue

    def _read(self, file: int, off: int) -> dict[str, Any] | None:
        fh = self._files[file]
        fh.seek(off)
        try:
            return outcome_of(json.loads(fh.readline()), file)
        except (ValueError, RecursionError):
            return None

    def count(self, *, ok: bool | None = None) -> int:
        where = "" if ok is None else f" WHERE ok = {int(ok)}"
        return self._db.execute(f"SELECT count(*) FROM last{where}").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        for fh in self._files:
            if fh is not None:
                fh.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> OutcomeIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
