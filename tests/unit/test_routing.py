"""Keyword routing: the documented scoring rule and the fallback to the default agent."""

import pytest

from hpc_chat.agents.config import AgentConfig
from hpc_chat.agents.routing import keyword_hits, keyword_score, route


def agent(name, keywords, threshold=0.7):
    return AgentConfig.model_validate({"name": name, "config": {
        "system_prompt": "x", "collaboration": {"delegation_threshold": threshold,
                                                "specialization_keywords": keywords}}})


AGENTS = [agent("creative_agent", ["creative", "story", "imagine"]),
          agent("analytical_agent", ["explain", "compare", "how does"]),
          agent("balanced_agent", ["help"])]


@pytest.mark.parametrize("hits, score", [(0, 0.0), (1, 0.75), (2, 0.9375), (3, 0.984375)])
def test_score_rule(hits, score):
    words = ["alpha", "beta", "gamma"][:hits]
    assert keyword_score(" ".join(words), ["alpha", "beta", "gamma"]) == pytest.approx(score)


def test_prefix_and_phrase_matching():
    assert keyword_hits("I imagined a Story!", ["imagine", "story"]) == ["imagine", "story"]
    assert keyword_hits("How does MPI work?", ["how does"]) == ["how does"]
    assert keyword_hits("does how MPI work", ["how does"]) == []
    assert keyword_hits("a history lesson", ["story"]) == []  # prefix of a word, not a suffix


def test_one_match_delegates_at_default_threshold():
    routes = route("Imagine a story about clusters", AGENTS, "balanced_agent")
    assert [r.agent for r in routes] == ["creative_agent"]
    assert routes[0].matched == ("story", "imagine")
    assert not routes[0].fallback


def test_several_agents_best_first():
    routes = route("Imagine and explain, then compare", AGENTS, "balanced_agent")
    # analytical matched two keywords (0.94), creative one (0.75)
    assert [r.agent for r in routes] == ["analytical_agent", "creative_agent"]


def test_no_match_falls_back_to_default():
    routes = route("What time is it?", AGENTS, "balanced_agent")
    assert [(r.agent, r.fallback) for r in routes] == [("balanced_agent", True)]


def test_threshold_above_one_match_requires_two():
    strict = [agent("strict", ["alpha", "beta"], threshold=0.9)]
    assert route("alpha only", strict, "strict")[0].fallback
    assert not route("alpha and beta", strict, "strict")[0].fallback
