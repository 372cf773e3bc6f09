"""Conversation history: in memory (``MemoryHistory``, the original design's
``DataUnitMemory``) or in a persistent SQLite file.

Only the driver writes history; workers receive recent turns by value in each task's context,
so this works with workers on other nodes. The SQLite file lives in ``$HPC_CHAT_HOME`` (mode
0600 in a 0700 directory) and uses SQLite's default rollback journal, not WAL, because home
directories on clusters are often on NFS or Lustre where WAL's shared memory does not work.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpc_chat.errors import ConfigError, HistoryError
from hpc_chat.protocol.request import stored_answer_mark
from hpc_chat.util.configfile import load_yaml, resolve_config_path, validate
from hpc_chat.util.paths import hpc_chat_home

# A rough characters-per-token ratio for budgeting history on the driver, which has no
# tokenizer; the worker trims exactly with the model's tokenizer (worker.fitting.fit_to_context).
CHARS_PER_TOKEN = 4


class HistoryConfig(BaseModel):
    """Settings of a history unit (the ``config:`` section of ConversationHistoryUnit.yml)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "conversation_history"
    description: str = ""
    data_type: Literal["memory", "sqlite"] = "memory"
    persistent: bool = False
    path: str | None = None
    max_turns: int = Field(4, ge=0)
    max_tokens: int = Field(768, ge=0)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, *, base: Path | None = None) -> HistoryConfig:
        resolved = resolve_config_path(path, base=base)
        data = load_yaml(resolved)
        section = data.get("config") or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{resolved}: config: expected a mapping of settings")
        flat = {**{k: v for k, v in data.items() if k != "config"}, **section}
        return validate(cls, flat, resolved)


def bound_turns(messages: list[dict[str, Any]], max_turns: int,
                max_tokens: int) -> list[dict[str, str]]:
    """The most recent messages: at most ``max_turns`` user/assistant pairs and about
    ``max_tokens`` tokens, dropping the oldest first. An answer keeps the names of the agents
    that made it (the engine then evaluates it as one chunk: :mod:`hpc_chat.llm.chunks`)."""
    recent = messages[-2 * max_turns:] if max_turns else []
    out = [{"role": m["role"], "content": m["content"], **stored_answer_mark(m)}
           for m in recent]
    while out and sum(len(m["content"]) for m in out) / CHARS_PER_TOKEN > max_tokens:
        out.pop(0)
    return out


# rounds: a synthesize or review reply's rounds (hpc_chat.driver.collaborate), beside it
TURN_KEYS = ("role", "agent", "content", "prompt_tokens", "completion_tokens", "rounds")


class MemoryHistory:
    """History kept in this process only."""

    def __init__(self, config: HistoryConfig | None = None):
        self.config = config or HistoryConfig()
        self._conversations: dict[str, list[dict[str, Any]]] = {}
        self._created: dict[str, float] = {}
        self._responses: dict[str, dict[str, Any]] = {}

    async def initialize(self) -> None:
        return None

    async def append(self, conversation: str, role: str, content: str, *,
                     agent: str | None = None, prompt_tokens: int | None = None,
                     completion_tokens: int | None = None) -> None:
        await self.append_turns(conversation, [{
            "role": role, "content": content, "agent": agent, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens}])

    async def append_turns(self, conversation: str, turns: list[dict[str, Any]]) -> None:
        """Add messages (``role``, ``content``, optional ``agent`` and token counts) together:
        a user turn and its answer are stored both or neither."""
        now = time.time()
        self._created.setdefault(conversation, now)
        self._conversations.setdefault(conversation, []).extend(
            {**dict.fromkeys(TURN_KEYS), **t, "created_at": now} for t in turns)

    async def messages(self, conversation: str, last: int | None = None
                       ) -> list[dict[str, Any]]:
        """The conversation's messages, oldest first (only the ``last`` ones when given)."""
        found = self._conversations.get(conversation, [])
        return list(found if last is None else found[-last:] if last > 0 else [])

    async def titled(self, limit: int, chars: int) -> list[dict[str, Any]]:
        """The newest ``limit`` conversations (as :meth:`conversations`), each with the first
        ``chars`` characters of its first user message as ``title`` (a list to pick from)."""
        found = (await self.conversations())[:limit]
        for entry in found:
            entry["title"] = next((m["content"][:chars] for m in
                                   self._conversations.get(entry["name"], [])
                                   if m["role"] == "user"), None)
        return found

    async def recent(self, conversation: str) -> list[dict[str, str]]:
        """What a new turn is answered with: only the rows it can use are read (a long
        conversation costs each request its last turns, not the whole table)."""
        if not self.config.max_turns:
            return []
        return bound_turns(await self.messages(conversation, last=2 * self.config.max_turns),
                           self.config.max_turns, self.config.max_tokens)

    async def conversations(self) -> list[dict[str, Any]]:
        """Newest (last changed) first."""
        found = [{"name": name, "messages": len(msgs), "created_at": self._created[name],
                  "updated_at": msgs[-1]["created_at"] if msgs else self._created[name]}
                 for name, msgs in self._conversations.items()]
        return sorted(found, key=lambda c: c["updated_at"], reverse=True)

    async def remove(self, conversation: str) -> bool:
        """Forget a conversation; False when there was none of that name."""
        self._created.pop(conversation, None)
        return self._conversations.pop(conversation, None) is not None

    async def save_response(self, ident: str, record: dict[str, Any]) -> None:
        """Keep a ``/v1/responses`` answer (its object and its own turns) under its id."""
        self._responses[ident] = json.loads(json.dumps(record))

    async def response(self, ident: str) -> dict[str, Any] | None:
        """A kept response's record, or None when no response has that id."""
        return self._responses.get(ident)

    async def close(self) -> None:
        return None


SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    role TEXT NOT NULL,
    agent TEXT,
    content TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created_at REAL NOT NULL,
    rounds TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS responses (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    record TEXT NOT NULL
);
"""


class SQLiteHistory(MemoryHistory):
    """History in an SQLite file that survives restarts."""

    locked_retry_s = 30.0  # how long a write waits for other writers before giving up

    def __init__(self, config: HistoryConfig | None = None):
        super().__init__(config or HistoryConfig(data_type="sqlite", persistent=True))
        self.path = Path(self.config.path).expanduser() if self.config.path else \
            hpc_chat_home() / "history.db"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def initialize(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            os.chmod(self.path, 0o600)
            db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
            db.executescript(SCHEMA)
            if "rounds" not in [row[1] for row in db.execute("PRAGMA table_info(messages)")]:
                try:  # a database from before collaboration modes: its turns have none
                    db.execute("ALTER TABLE messages ADD COLUMN rounds TEXT")
                    db.commit()
                except sqlite3.OperationalError as exc:  # another driver added it first
                    if "duplicate column" not in str(exc):
                        raise
        except sqlite3.DatabaseError as exc:
            raise HistoryError(self._explain(exc)) from None
        except OSError as exc:
            raise HistoryError(f"{self.path}: cannot open the history database: {exc}") from None
        self._db = db

    def _explain(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "locked" in text:
            return (f"{self.path}: the history database is locked by another process; wait for "
                    f"it to finish or use another HPC_CHAT_HOME")
        if "not a database" in text or "malformed" in text:
            return (f"{self.path}: the history database is corrupt ({text}). Nothing was "
                    f"changed; move it aside (mv {self.path} {self.path}.bad) to start a new one")
        return f"{self.path}: history database error: {text}"

    def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        """A read (writes go through :meth:`append_turns` and :meth:`remove`)."""
        if self._db is None:
            raise HistoryError("the history unit is not initialized")
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise HistoryError(self._explain(exc)) from None

    def _conversation_id(self, name: str) -> int | None:
        rows = self._run("SELECT id FROM conversations WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    async def append_turns(self, conversation: str, turns: list[dict[str, Any]]) -> None:
        """One transaction (``BEGIN IMMEDIATE``, so two writers queue on SQLite's busy timeout
        instead of failing on a lock upgrade), tried again while another writer holds the
        database, for up to ``locked_retry_s``. Run in a thread: while it waits for the lock,
        the driver's event loop keeps delivering answers."""
        if self._db is None:
            raise HistoryError("the history unit is not initialized")
        await asyncio.to_thread(self._append_turns_blocking, conversation, turns)

    def _append_turns_blocking(self, conversation: str, turns: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + self.locked_retry_s
        while True:
            with self._lock:
                try:
                    self._write_turns(conversation, turns)
                    return
                except sqlite3.Error as exc:
                    if self._db.in_transaction:
                        self._db.rollback()
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise HistoryError(self._explain(exc)) from None
            time.sleep(0.05)

    def _write_turns(self, conversation: str, turns: list[dict[str, Any]]) -> None:
        db, now = self._db, time.time()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT OR IGNORE INTO conversations (name, created_at, updated_at) "
                   "VALUES (?, ?, ?)", (conversation, now, now))
        cid = db.execute("SELECT id FROM conversations WHERE name = ?",
                         (conversation,)).fetchone()[0]
        db.executemany(
            "INSERT INTO messages (conversation_id, role, agent, content, prompt_tokens, "
            "completion_tokens, created_at, rounds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(cid, t["role"], t.get("agent"), t["content"], t.get("prompt_tokens"),
              t.get("completion_tokens"), now,
              json.dumps(t["rounds"]) if t.get("rounds") else None) for t in turns])
        db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, cid))
        db.commit()

    async def messages(self, conversation: str, last: int | None = None
                       ) -> list[dict[str, Any]]:
        cid = self._conversation_id(conversation)
        if cid is None:
            return []
        rows = self._run("SELECT role, agent, content, prompt_tokens, completion_tokens, "
                         "created_at, rounds FROM messages WHERE conversation_id = ? ORDER BY "
                         "id DESC LIMIT ?", (cid, -1 if last is None else last))[::-1]
        keys = ("role", "agent", "content", "prompt_tokens", "completion_tokens", "created_at")
        return [{**dict(zip(keys, row)), "rounds": _rounds(row[-1])} for row in rows]

    async def titled(self, limit: int, chars: int) -> list[dict[str, Any]]:
        """One query, off the event loop (a page asks for this after every answer)."""
        rows = await asyncio.to_thread(
            self._run, "SELECT c.name, (SELECT COUNT(*) FROM messages m WHERE "
            "m.conversation_id = c.id), c.created_at, c.updated_at, (SELECT substr(m.content, "
            "1, ?) FROM messages m WHERE m.conversation_id = c.id AND m.role = 'user' ORDER BY "
            "m.id LIMIT 1) FROM conversations c ORDER BY c.updated_at DESC LIMIT ?",
            (chars, limit))
        return [{"name": n, "messages": k, "created_at": c, "updated_at": u, "title": t}
                for n, k, c, u, t in rows]

    async def conversations(self) -> list[dict[str, Any]]:
        rows = self._run("SELECT c.name, COUNT(m.id), c.created_at, c.updated_at FROM "
                         "conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
                         "GROUP BY c.id ORDER BY c.updated_at DESC")
        return [{"name": n, "messages": k, "created_at": c, "updated_at": u}
                for n, k, c, u in rows]

    async def remove(self, conversation: str) -> bool:
        cid = self._conversation_id(conversation)
        if cid is None:
            return False
        with self._lock:  # both deletes in one transaction
            try:
                with self._db:
                    self._db.execute("DELETE FROM messages WHERE conversation_id = ?", (cid,))
                    self._db.execute("DELETE FROM conversations WHERE id = ?", (cid,))
            except sqlite3.Error as exc:
                raise HistoryError(self._explain(exc)) from None
        return True

    async def save_response(self, ident: str, record: dict[str, Any]) -> None:
        if self._db is None:
            raise HistoryError("the history unit is not initialized")
        text = json.dumps(record, ensure_ascii=False)

        def write() -> None:
            with self._lock:
                try:
                    with self._db:
                        self._db.execute("INSERT INTO responses (name, created_at, record) "
                                         "VALUES (?, ?, ?)", (ident, time.time(), text))
                except sqlite3.Error as exc:
                    raise HistoryError(self._explain(exc)) from None
        await asyncio.to_thread(write)

    async def response(self, ident: str) -> dict[str, Any] | None:
        rows = await asyncio.to_thread(self._run, "SELECT record FROM responses WHERE name = ?",
                                       (ident,))
        return json.loads(rows[0][0]) if rows else None

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


def create_history(config: HistoryConfig) -> MemoryHistory:
    if config.data_type == "sqlite":
        return SQLiteHistory(config)
    return MemoryHistory(config)


def _rounds(text: str | None) -> list[dict[str, Any]] | None:
    """A stored turn's rounds; None for a turn without (or a value not written here)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, list) else None
