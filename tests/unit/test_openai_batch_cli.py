"""OpenAI batch files through the CLI with the echo model: detection, hostile lines,
resume and retries leaving each custom_id once across the output and its errors file."""

from __future__ import annotations

import json

from tests.helpers.cli import hpc
from tests.helpers.requests import line


def write(path, lines) -> None:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n"
                            for x in lines))


def read(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_a_request_without_custom_id_is_still_read_as_openai(tmp_path):
    batch = tmp_path / "b.jsonl"
    no_id = line()
    del no_id["custom_id"]
    write(batch, [no_id, line(custom_id="ok")])
    run = hpc(tmp_path / "home", "batch", "--check", str(batch))
    assert run.returncode == 2 and "line 1: \"custom_id\" must be a non-empty string" in \
        run.stderr, run.stderr
    assert "missing \"prompt\"" not in run.stderr


def test_hostile_openai_lines_are_errors_of_their_own(tmp_path):
    deep = '{"custom_id": "deep", "url": "/v1/chat/completions", "body": {"model": ' \
           '"balanced_agent", "messages": ' + "[" * 985 + "]" * 985 + "}}"
    surrogate = '{"custom_id": "s", "url": "/v1/chat/completions", "body": {"model": ' \
                '"balanced_agent", "messages": [{"role": "user", "content": "hi \\ud800"}]}}'
    batch = tmp_path / "b.jsonl"
    write(batch, [deep, surrogate, line(custom_id="good"),
                  '{"custom_id": "huge", "body": {"seed": 1' + "0" * 5000 + "}}"])
    out = tmp_path / "out.jsonl"
    run = hpc(tmp_path / "home", "batch", str(batch), "-o", str(out))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert [x["custom_id"] for x in read(out)] == ["good"]
    errors = {x["hpc_chat"]["line"]: x for x in read(tmp_path / "out.errors.jsonl")}
    assert sorted(errors) == [1, 2, 4]
    assert errors[2]["custom_id"] == "s" and "lone surrogate" in \
        errors[2]["response"]["body"]["error"]["message"]
    twice = tmp_path / "twice.jsonl"
    write(twice, [surrogate, line(custom_id="s")])  # the bad line still claims its id
    again = hpc(tmp_path / "home", "batch", "--check", str(twice))
    assert again.returncode == 2 and "custom_id 's' is on line 1 and line 2" in again.stderr


def test_resume_and_retries_leave_each_custom_id_once(tmp_path):
    """b fails (unknown model), a is answered; then a is edited and b fixed: --resume answers
    both again, and both files keep one line per custom_id: its last outcome."""
    home = tmp_path / "home"
    batch = tmp_path / "b.jsonl"
    out = tmp_path / "out.jsonl"
    errors = tmp_path / "out.errors.jsonl"
    write(batch, [line({"seed": 1}, custom_id="a"), line({"model": "nope"}, custom_id="b")])
    assert hpc(home, "batch", str(batch), "-o", str(out)).returncode == 1
    assert [x["custom_id"] for x in read(out)] == ["a"]
    assert [x["custom_id"] for x in read(errors)] == ["b"]
    same = hpc(home, "batch", str(batch), "-o", str(out), "--resume", "--retry-failed")
    assert same.returncode == 1  # b failed again on its input
    assert [x["custom_id"] for x in read(errors)] == ["b"]  # once, not twice

    write(batch, [line({"seed": 2}, custom_id="a"), line(custom_id="b")])
    fixed = hpc(home, "batch", str(batch), "-o", str(out), "--resume")
    assert fixed.returncode == 0, fixed.stderr
    answers = read(out)
    assert sorted(x["custom_id"] for x in answers) == ["a", "b"]
    seeds = {x["custom_id"]: x["response"]["body"]["hpc_chat"]["agents"][0]["sampling"]["seed"]
             for x in answers}
    assert seeds["a"] == 2  # the edited request's answer, the first one is gone
    assert not errors.exists()  # b's failure was superseded by its answer


def test_native_ids_that_collide_as_custom_ids_are_refused(tmp_path):
    batch = tmp_path / "b.jsonl"
    write(batch, [{"id": 7, "prompt": "x"}, {"id": "7", "prompt": "y"}])
    run = hpc(tmp_path / "home", "batch", str(batch), "-o", str(tmp_path / "o.jsonl"),
              "--output-format", "openai")
    assert run.returncode == 2 and "ids on line 1 and line 2 are both '7'" in run.stderr
