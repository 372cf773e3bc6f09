"""What `ask` and `chat` print for a result."""

from __future__ import annotations

from hpc_chat.cli.output import print_result


def test_an_agent_that_failed_beside_one_that_answered_is_named(capsys):
    result = {"ok": True, "response": "Blue light scatters more.", "latency_s": 1.5,
              "completion_tokens": 5,
              "responses": [{"agent": "balanced_agent", "finish_reason": "stop"},
                            {"agent": "creative_agent",
                             "error": "creative_agent: timed out (performance.timeout_seconds)"}]}
    print_result(result)
    out, err = capsys.readouterr()
    assert out == "Blue light scatters more.\n"
    assert "creative_agent did not answer: creative_agent: timed out" in " ".join(err.split())
    assert "balanced_agent ·" in err


def test_raw_prints_the_answer_only(capsys):
    print_result({"ok": True, "response": "x", "latency_s": 0.1, "completion_tokens": 1,
                  "responses": [{"agent": "a", "error": "boom"}]}, raw=True)
    assert capsys.readouterr() == ("x\n", "")
