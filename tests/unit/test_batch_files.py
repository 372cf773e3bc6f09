"""A Batch API batch's files, without a server: validation names each bad line,
what was written is found again after a kill (a cut line cut off), and the summary of a run
keeps numbers, not lines."""

from __future__ import annotations

import json

from hpc_chat.driver.stats import PerformanceStats, RequestRecord, Summary
from hpc_chat.server.batch_files import MAX_ERRORS, Appender, requests, validate, written


def line(custom_id, url="/v1/chat/completions", **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url,
                       "body": {"model": "m", "messages": [{"role": "user", "content": "x"}],
                                **body}})


def test_validation_counts_requests_and_names_every_bad_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes("\n".join([line("a"), "", "nope", line("a"), line("b", url="/v1/x"),
                                json.dumps({"custom_id": "c", "url": "/v1/chat/completions"}),
                                ""]).encode() + b"\xff not UTF-8\n")
    total, errors, model = validate(path, "/v1/chat/completions")
    assert total == 6 and model == "m"  # the blank line is not a request
    assert [(e["line"], e["code"]) for e in errors] == [
        (3, "invalid_json_line"), (4, "duplicate_custom_id"), (5, "invalid_url"),
        (6, "invalid_request"), (7, "invalid_json_line")]
    assert "line 1" in errors[1]["message"]


def test_validation_lists_a_bounded_number_of_errors_then_counts(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("not json\n" * (MAX_ERRORS + 5))
    total, errors, _ = validate(path, "/v1/chat/completions")
    assert total == MAX_ERRORS + 5 and len(errors) == MAX_ERRORS + 1
    assert errors[-1]["code"] == "too_many_errors" and str(MAX_ERRORS + 5) in errors[-1]["message"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert validate(empty, "/v1/chat/completions")[1][0]["code"] == "empty_file"


def test_what_was_written_is_found_again_and_a_cut_line_is_cut_off(tmp_path):
    answer = {"custom_id": "a", "response": {"status_code": 200, "body": {
        "usage": {"prompt_tokens": 5, "completion_tokens": 3}}}}
    (tmp_path / "output.jsonl").write_text(json.dumps(answer) + "\n" + '{"custom_id": "b", "resp')
    (tmp_path / "errors.jsonl").write_text(json.dumps({"custom_id": "c", "response": None})
                                           + "\n")
    done, counts, usage = written(tmp_path)
    assert counts == (1, 1) and len(done) == 2
    assert usage["input_tokens"] == 5 and usage["output_tokens"] == 3
    assert (tmp_path / "output.jsonl").read_text() == json.dumps(answer) + "\n"  # b runs again
    assert "a" in done and "c" in done and "b" not in done


def test_a_line_is_appended_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "output.jsonl"
    with Appender(path) as out:
        out.write("one\n")
        monkeypatch.setattr("os.write", lambda fd, data: len(data) // 2)  # a full disk
        try:
            out.write("two two two\n")
        except OSError:
            pass
        else:
            raise AssertionError("a short write must raise")
    assert path.read_text() == "one\n" and oct(path.stat().st_mode & 0o777) == "0o600"


def test_lines_are_read_one_at_a_time_with_their_numbers(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(line("a") + "\n\n" + line("b", temperature=9) + "\n")
    got = [item for chunk in requests(path, chunk=2) for item in chunk]
    assert got[1] is None and got[0].id == "a" and got[0].error is None
    assert got[2].id == "b" and got[2].line == 3 and got[2].problem.param == "body.temperature"


def test_a_running_summary_reports_what_the_records_would():
    records = [RequestRecord(True, 0.0, 2.0, 10, 4, ("a",)),
               RequestRecord(False, 1.0, 5.0),
               RequestRecord(True, 1.0, 2.0, 6, 2, ("a", "b"), cached=True, model_loads=1)]
    totals = Summary()
    for r in records:
        totals.add(r)
    got = totals.result()
    assert got["avg_response_time"] == 1.5 and got["min_response_time"] == 1.0
    assert got["throughput"] == 2 / 5.0 and got["tokens_per_s"] == 16 / 5.0
    assert (got["completion_tokens"], got["prompt_tokens"], got["model_loads"]) == (16, 6, 1)
    shared = PerformanceStats()
    for r in records:
        shared.add(r)
    assert shared.summary() == got
    assert (got["total_requests"], got["successful_requests"], got["wall_time"]) == (3, 2, 5.0)
    assert got["p50_response_time"] == 1.0 and got["max_response_time"] == 2.0
    assert got["agent_answers"] == {"a": 2, "b": 1} and got["cache_hits"] == 1
    assert Summary().result()["throughput"] == 0.0
