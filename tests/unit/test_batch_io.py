"""Batch input parsing and the resumable output file (no model needed)."""

import json
from pathlib import Path

import pytest

from hpc_chat.batch.input import id_key, read_batch
from hpc_chat.batch.outcomes import Outcome, OutcomeIndex, digest
from hpc_chat.batch.output import OutputWriter, stats_from_output
from hpc_chat.errors import InputError


def test_jsonl_with_and_without_ids(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": "a", "prompt": "one"}\n{"prompt": "two"}\n')
    items = read_batch(f)
    assert [(i.id, i.prompt, i.error) for i in items] == [("a", "one", None), (2, "two", None)]


def test_plain_text_one_prompt_per_line(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("first question\nsecond question\n")
    assert [(i.id, i.prompt) for i in read_batch(f)] == [(1, "first question"),
                                                         (2, "second question")]


def test_bad_lines_become_errors_and_the_rest_survive(fixtures):
    items = read_batch(fixtures / "batch" / "mixed.jsonl")
    errors = {i.line: i.error for i in items if i.error}
    assert set(errors) == {2, 3, 4, 5, 6, 7, 8, 9}
    assert "invalid JSON" in errors[2]
    assert "missing \"prompt\"" in errors[3]
    assert "must be a string, not int" in errors[4]
    assert "empty line" in errors[5]
    assert "duplicate id 'a' (first used on line 1)" in errors[6]
    assert "expected a JSON object" in errors[7]
    assert "not UTF-8" in errors[8]
    assert "empty prompt" in errors[9]
    assert [i.prompt for i in items if not i.error] == ["fine", "also fine"]


def test_empty_file_is_an_error(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    with pytest.raises(InputError, match="empty"):
        read_batch(f)


def test_missing_input(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_batch(tmp_path / "nope.jsonl")


def test_output_refuses_to_clobber_and_unwritable_paths(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 1, "ok": true}\n')
    with pytest.raises(InputError, match="--resume"):
        OutputWriter(out, resume=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        OutputWriter(blocker / "sub" / "out.jsonl", resume=False)


def test_resume_reads_last_line_per_id_and_skips_partial_lines(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 1, "ok": false, "error": "x"}\n{"id": 2, "ok": true}\n'
                   '{"id": 1, "ok": true}\n{"id": "3", "ok": tr')
    with OutcomeIndex(out) as last:
        assert [last.get(id_key(i)).ok for i in (1, 2)] == [True, True]
        assert last.get(id_key("3")) is None and last.count(ok=True) == 2
    writer = OutputWriter(out, resume=True)  # starts a new line after the cut one
    item = read_batch_item(4, "q")
    writer.write(item, None, finished_at=1.0)
    writer.close()
    with OutcomeIndex(out) as last:
        assert last.get(id_key(4)) == Outcome(False, "input", digest("q"), digest("q"))
        assert [line["id"] for line in last.lines()] == [1, 2, 4]  # where each id first came
        assert [line.get("error") for line in last.lines()] == [None, None, "bad"]
    assert json.loads(out.read_text().splitlines()[-1])["id"] == 4


def test_the_outcome_index_is_private_and_removed(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 1, "prompt": "p", "ok": true}\n')
    index = OutcomeIndex(out)
    where = Path(index._dir)
    assert where.stat().st_mode & 0o777 == 0o700
    assert index.read(index.answered_at("p"))["prompt"] == "p"
    assert index.answered_at("q") is None
    index.close()
    assert not where.exists()


def read_batch_item(ident, prompt):
    from hpc_chat.batch.input import BatchItem
    return BatchItem(ident, prompt, 1, "bad")


def test_stats_from_output(tmp_path):
    out = tmp_path / "out.jsonl"
    lines = [{"id": 1, "ok": True, "latency_s": 2.0, "finished_at": 12.0, "completion_tokens": 10,
              "agents": ["a"]},
             {"id": 2, "ok": True, "latency_s": 1.0, "finished_at": 14.0, "completion_tokens": 20,
              "agents": ["a", "b"]},
             {"id": 3, "ok": False, "latency_s": 0.0, "finished_at": 14.0}]
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    s = stats_from_output(out)
    assert (s["total_requests"], s["successful_requests"], s["failed_requests"]) == (3, 2, 1)
    assert s["wall_time"] == pytest.approx(4.0)  # from 10.0 to 14.0
    assert s["throughput"] == pytest.approx(0.5)
    assert s["tokens_per_s"] == pytest.approx(7.5)
    assert s["agent_answers"] == {"a": 2, "b": 1}
    assert s["max_response_time"] == 2.0


def test_stats_of_non_output_file(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text("hello\n")
    with pytest.raises(InputError, match="no result lines"):
        stats_from_output(f)


def test_a_run_keeps_the_line_numbers_of_what_it_answers_and_reads_them_again(tmp_path):
    """A corpus is not held in memory: the run keeps the runnable lines' numbers and parses
    them again when they are answered, with the same ids (as custom_ids for OpenAI output)."""
    from hpc_chat.batch.input import LinesOf
    from hpc_chat.batch.run import BatchRun

    f = tmp_path / "in.jsonl"
    f.write_text('{"id": 7, "prompt": "one"}\n\n{"id": 7, "prompt": "again"}\n'
                 '{"prompt": "four"}\n')
    run = BatchRun(str(f), str(tmp_path / "out.jsonl"), output_format="openai")
    try:
        assert isinstance(run.runnable, LinesOf) and len(run.runnable) == 2
        assert [(i.id, i.prompt, i.line) for i in run.runnable] == [("7", "one", 1),
                                                                   ("4", "four", 4)]
        assert [i.line for i in run.bad] == [2, 3] and run.total == 4
        assert "duplicate id" in run.bad[1].error
    finally:
        run.close()


def test_a_repeated_custom_id_refuses_the_run_before_any_output_exists(tmp_path):
    from hpc_chat.batch.run import BatchRun

    line = {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}}
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(InputError, match="custom_id 'x' is on line 1 and line 2"):
        BatchRun(str(f), str(tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists()


def test_a_pipe_is_read_once_and_held(tmp_path):
    """``<(zcat corpus.jsonl.gz)`` cannot be read twice: its lines are held, none lost."""
    import os
    import threading

    from hpc_chat.batch.run import BatchRun

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    lines = "".join(json.dumps({"id": i, "prompt": f"p{i}"}) + "\n" for i in range(5000))
    feeder = threading.Thread(target=lambda: fifo.write_text(lines))
    feeder.start()
    run = BatchRun(str(fifo), str(tmp_path / "out.jsonl"), fmt="jsonl")
    try:
        feeder.join(10)
        got = list(run.runnable)
        assert isinstance(run.runnable, list) and len(got) == 5000
        assert (got[0].id, got[-1].prompt) == (0, "p4999")
    finally:
        run.close()


def test_lines_read_again_must_be_the_lines_decided_on(tmp_path):
    from hpc_chat.batch.input import LinesOf

    f = tmp_path / "in.jsonl"
    f.write_text('{"prompt": "one"}\n{"prompt": "two"}\n')
    assert [i.prompt for i in LinesOf(f, "jsonl", [2])] == ["two"]
    with pytest.raises(InputError, match="line 3 is gone"):
        list(LinesOf(f, "jsonl", [2, 3]))
    f.write_text('{"prompt": "one"}\n{"no prompt": 1}\n')
    with pytest.raises(InputError, match="line 2 changed while the batch ran"):
        list(LinesOf(f, "jsonl", [2]))


def test_resume_bookkeeping_does_not_hold_the_answers(tmp_path):
    """20,000 answered lines of 2 KB each (40 MB) are indexed for resume with a few MB of
    Python memory: the answers stay on disk (held as dicts, as before, they took 57 MiB)."""
    import tracemalloc

    out = tmp_path / "out.jsonl"
    with out.open("w") as fh:
        for i in range(20_000):
            fh.write(json.dumps({"id": i, "prompt": f"p{i}", "ok": i % 7 != 0,
                                 "provenance": {"messages": "x" * 2000}}) + "\n")
    tracemalloc.start()
    try:
        with OutcomeIndex(out) as last:
            answered = sum(last.get(id_key(i)).ok for i in range(20_000))
            moved = last.read(last.answered_at("p1"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answered == 20_000 - len(range(0, 20_000, 7))
    assert moved["id"] == 1 and len(moved["provenance"]["messages"]) == 2000
    assert peak < 10 * 2**20, f"{peak / 2**20:.1f} MiB"
