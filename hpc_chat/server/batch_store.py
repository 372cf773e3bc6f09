"""The Files and Batches API's durable state, under ``$HPC_CHAT_HOME/batches`` (a directory
only its user can enter, :func:`hpc_chat.util.paths.home_subdir`).

- ``files/<id>``: an uploaded file's bytes, 0600;
- ``work/<batch id>/output.jsonl`` and ``errors.jsonl``: a batch's answers and failures,
  appended as each completes (they become its output and error files when it ends);
- ``store.db`` (SQLite, 0600): a record per file and per batch. A batch's record is OpenAI's
  ``Batch`` object as JSON, rewritten as its state changes, so a server started again finds
  every batch it had not finished (:mod:`hpc_chat.server.batch_runner`).

Ids are random (``file-…``, ``batch_…``), never built from a name a client gave; listings page
newest first, as OpenAI's.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from hpc_chat.errors import ConfigError
from hpc_chat.util.paths import home_subdir

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, record TEXT NOT NULL,
    path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, record TEXT NOT NULL);
"""
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def derived_id(batch_id: str, name: str) -> str:
    """The id of a batch's output or error file: the same whenever it is registered, so a
    server stopped while registering it cannot make two records of one file."""
    return "file-" + hashlib.blake2b(f"{batch_id}/{name}".encode(), digest_size=12).hexdigest()


class BatchStore:
    """Records and file paths; every method is called from the server's event loop."""

    def __init__(self, root: Path | None = None):
        self.root = root or home_subdir("batches")
        for name in ("files", "work"):
            (self.root / name).mkdir(mode=0o700, exist_ok=True)
        path = self.root / "store.db"
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        try:
            self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: cannot open the batch store ({exc}); move it aside "
                              f"to start an empty one") from None

    # ------------------------------------------------------------------------------ files

    def upload_path(self, file_id: str) -> Path:
        return self.root / "files" / file_id

    def work_dir(self, batch_id: str) -> Path:
        path = self.root / "work" / batch_id
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def add_file(self, path: Path, *, filename: str, purpose: str,
                 file_id: str | None = None) -> dict[str, Any]:
        record = {"id": file_id or new_id("file-"), "object": "file",
                  "bytes": path.stat().st_size, "created_at": int(time.time()),
                  "filename": filename, "purpose": purpose, "status": "processed",
                  "expires_at": None, "status_details": None}
        self._db.execute("INSERT OR IGNORE INTO files (id, record, path) VALUES (?, ?, ?)",
                         (record["id"], json.dumps(record), str(path)))
        return record

    def file(self, file_id: str) -> tuple[dict[str, Any], Path] | None:
        row = self._db.execute("SELECT record, path FROM files WHERE id = ?",
                               (file_id,)).fetchone()
        return (json.loads(row[0]), Path(row[1])) if row else None

    def files(self, *, after: str | None, limit: int, ascending: bool,
              purpose: str | None) -> tuple[list[dict[str, Any]], bool]:
        return self._page("files", after, limit, ascending,
                          lambda r: purpose is None or r["purpose"] == purpose)

    def delete_file(self, file_id: str) -> None:
        found = self.file(file_id)
        self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        if found is not None:
            found[1].unlink(missing_ok=True)

    # ---------------------------------------------------------------------------- batches

    def add_batch(self, record: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO batches (id, record) VALUES (?, ?)",
                         (record["id"], json.dumps(record)))

    def save_batch(self, record: dict[str, Any]) -> None:
        self._db.execute("UPDATE batches SET record = ? WHERE id = ?",
                         (json.dumps(record), record["id"]))

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT record FROM batches WHERE id = ?",
                               (batch_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def batches(self, *, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        return self._page("batches", after, limit, False, lambda r: True)

    def unfinished(self) -> list[dict[str, Any]]:
        """The batches a server must carry on with, oldest first."""
        rows = self._db.execute("SELECT record FROM batches ORDER BY seq").fetchall()
        return [r for r in (json.loads(row[0]) for row in rows) if r["status"] in UNFINISHED]

    def users_of(self, file_id: str) -> list[str]:
        """Unfinished batches that read ``file_id``."""
        return [r["id"] for r in self.unfinished() if r["input_file_id"] == file_id]

    def _page(self, table: str, after: str | None, limit: int, ascending: bool,
              keep) -> tuple[list[dict[str, Any]], bool]:
        """One page of a listing: the records after the one with id ``after`` (newest first
        unless ``ascending``); and whether more follow."""
        order, compare = ("ASC", ">") if ascending else ("DESC", "<")
        query, args = f"SELECT record FROM {table}", []  # noqa: S608 - names are ours
        if after is not None:
            seq = self._db.execute(f"SELECT seq FROM {table} WHERE id = ?",  # noqa: S608
                                   (after,)).fetchone()
            if seq is None:
                return [], False
            query, args = f"{query} WHERE seq {compare} ?", [seq[0]]
        found = []
        for (raw,) in self._db.execute(f"{query} ORDER BY seq {order}", args):
            record = json.loads(raw)
            if keep(record):
                found.append(record)
                if len(found) > limit:
                    break
        return found[:limit], len(found) > limit

    def take_lock(self) -> str | None:
        """Become the one server that runs this home's batches: None when this one does,
        else who does (two servers answering one batch would write its lines twice). Held
        until the process ends. (``lockf`` on a network file system is only as good as its
        lock daemon.)"""
        fd = os.open(self.root / "runner.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW |
                     os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._lock_fd = fd
        return None

    def close(self) -> None:
        self._db.close()
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)
