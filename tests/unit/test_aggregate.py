"""Aggregation: one documented, deterministic rule; every answer kept in the metadata."""

from hpc_chat.agents.aggregate import aggregate_responses


def resp(agent, content, tokens=5, cached=False):
    return {"agent": agent, "content": content, "cached": cached,
            "usage": {"prompt_tokens": 10, "completion_tokens": tokens}}


def test_single_answer_is_the_reply():
    out = aggregate_responses([resp("a", "hello")])
    assert out["content"] == "hello"
    assert out["ok"] and out["primary_agent"] == "a"


def test_several_answers_joined_in_given_order_with_headers():
    out = aggregate_responses([resp("b", "two", 3), resp("a", "one", 4)])
    assert out["content"] == "[b]\ntwo\n\n[a]\none"
    assert out["agents"] == ["b", "a"]
    assert out["usage"] == {"prompt_tokens": 20, "completion_tokens": 7, "cached_tokens": 0}
    assert [r["agent"] for r in out["responses"]] == ["b", "a"]
    assert out == aggregate_responses([resp("b", "two", 3), resp("a", "one", 4)])


def test_failures_are_kept_but_not_in_the_reply():
    out = aggregate_responses([{"agent": "a", "error": "boom"}, resp("b", "fine")])
    assert out["ok"] and out["content"] == "fine"
    assert out["errors"] == [{"agent": "a", "error": "boom"}]


def test_all_failed():
    out = aggregate_responses([{"agent": "a", "error": "boom"}])
    assert not out["ok"] and out["content"] == "" and out["primary_agent"] is None


def test_cached_only_when_every_answer_was():
    assert aggregate_responses([resp("a", "x", cached=True)])["cached"]
    assert not aggregate_responses([resp("a", "x", cached=True), resp("b", "y")])["cached"]
