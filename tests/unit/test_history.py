"""History units: bounded context, SQLite persistence, permissions, corrupt and locked files."""

import sqlite3
import stat

import pytest

from hpc_chat.driver.history import HistoryConfig, MemoryHistory, SQLiteHistory, bound_turns
from hpc_chat.errors import HistoryError


def test_bound_turns_keeps_recent_pairs_and_token_budget():
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}
            for i in range(10)]
    assert [m["content"] for m in bound_turns(msgs, 2, 1000)] == ["m6", "m7", "m8", "m9"]
    assert bound_turns(msgs, 0, 1000) == []
    long = [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "y" * 40}]
    assert [m["content"][0] for m in bound_turns(long, 4, 50)] == ["y"]  # 100 tokens > 50


def test_memory_unit_round_trip(run):
    unit = MemoryHistory(HistoryConfig(max_turns=1))
    run(unit.append("c", "user", "hello"))
    run(unit.append("c", "assistant", "hi", agent="a"))
    run(unit.append("c", "user", "again"))
    assert [m["content"] for m in run(unit.recent("c"))] == ["hi", "again"]
    # a stored answer keeps its agents' names: the engine evaluates it as one chunk
    assert run(unit.recent("c")) == [{"role": "assistant", "content": "hi", "agent": "a"},
                                     {"role": "user", "content": "again"}]
    assert run(unit.conversations())[0]["messages"] == 3


def test_sqlite_persists_across_instances_with_private_permissions(tmp_path, run):
    path = tmp_path / "private" / "history.db"
    cfg = HistoryConfig(data_type="sqlite", path=str(path))
    unit = SQLiteHistory(cfg)
    run(unit.initialize())
    run(unit.append("proj", "user", "q1"))
    run(unit.append("proj", "assistant", "a1", agent="balanced_agent", completion_tokens=3))
    run(unit.close())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = SQLiteHistory(cfg)
    run(again.initialize())
    msgs = run(again.messages("proj"))
    assert [(m["role"], m["content"], m["agent"]) for m in msgs] == [
        ("user", "q1", None), ("assistant", "a1", "balanced_agent")]
    assert msgs[1]["completion_tokens"] == 3
    assert [c["name"] for c in run(again.conversations())] == ["proj"]
    assert run(again.messages("unknown")) == []
    run(again.close())


def test_default_location_is_hpc_chat_home(hpc_home, run):
    unit = SQLiteHistory()
    assert unit.path == hpc_home / "history.db"


def test_corrupt_database_is_a_clear_error_and_untouched(tmp_path, run):
    path = tmp_path / "history.db"
    garbage = b"this is not sqlite" * 100
    path.write_bytes(garbage)
    unit = SQLiteHistory(HistoryConfig(data_type="sqlite", path=str(path)))
    with pytest.raises(HistoryError, match="corrupt.*move it aside"):
        run(unit.initialize())
    assert path.read_bytes() == garbage


def test_locked_database_is_a_clear_error(tmp_path, run):
    path = tmp_path / "history.db"
    unit = SQLiteHistory(HistoryConfig(data_type="sqlite", path=str(path)))
    run(unit.initialize())
    unit._db.execute("PRAGMA busy_timeout = 100")
    unit.locked_retry_s = 0.5
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(HistoryError, match="locked by another process"):
            run(unit.append("c", "user", "hi"))
    finally:
        other.rollback()
        other.close()
    run(unit.append("c", "user", "hi"))  # works once the lock is gone
    assert len(run(unit.messages("c"))) == 1
    run(unit.close())


WRITER = """
import asyncio, sys
from hpc_chat.driver.history import HistoryConfig, SQLiteHistory

async def main(path, tag):
    unit = SQLiteHistory(HistoryConfig(data_type="sqlite", path=path))
    await unit.initialize()
    for i in range(150):
        await unit.append_turns("shared", [{"role": "user", "content": f"{tag} q{i}"},
                                           {"role": "assistant", "content": f"{tag} a{i}"}])
    await unit.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_two_writers_lose_no_turn_and_keep_each_pair_together(tmp_path, run):
    """Two processes append 150 question-answer pairs each to one conversation at once."""
    import subprocess
    import sys

    path = str(tmp_path / "history.db")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, tag],
                              stderr=subprocess.PIPE, text=True) for tag in ("A", "B")]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    unit = SQLiteHistory(HistoryConfig(data_type="sqlite", path=path))
    run(unit.initialize())
    texts = [m["content"] for m in run(unit.messages("shared"))]
    run(unit.close())
    assert len(texts) == 600
    for q, a in zip(texts[::2], texts[1::2]):  # every answer right after its question
        assert q.split()[0] == a.split()[0] and q.split()[1][1:] == a.split()[1][1:]
