"""The collaboration modes' pure parts: the prompts, the vote, the stopping rule, a request's
mode, and remote model names; errors name the file and key."""

from __future__ import annotations

import asyncio
import json

import pytest

from hpc_chat.agents.modes import (
    CollaborationSettings,
    parse_mode,
    render,
    review_prompt,
    synthesis_prompt,
    unchanged,
    vote,
)
from hpc_chat.driver.collaborate import collaborate
from hpc_chat.driver.result import request_result
from hpc_chat.errors import ConfigError, HpcChatError
from hpc_chat.llm.models import RemoteModel, available_models, remote_model
from hpc_chat.openai.batch import RequestError, body_fields, parse_request
from hpc_chat.protocol.request import Mode


def answers(*pairs):
    return [{"agent": a, "content": c} for a, c in pairs]


def test_the_synthesis_prompt_lists_every_answer_in_order():
    text = synthesis_prompt(CollaborationSettings(), "Why?", answers(("a", "One."), ("b", "Two.")))
    assert text.index("Answer 1:\nOne.") < text.index("Answer 2:\nTwo.")
    assert "Question: Why?" in text and "[a]" not in text  # the agents are not named


def test_a_review_prompt_shows_the_agents_own_answer_apart_from_the_others():
    text = review_prompt(CollaborationSettings(), "Why?", "b",
                         answers(("a", "One."), ("b", "Two."), ("c", "Three.")), 1)
    assert "Your previous answer:\nTwo." in text
    assert text.count("Another assistant's answer:") == 2
    assert "One." in text and "Three." in text


def test_templates_run_sandboxed():
    with pytest.raises(HpcChatError, match="unsafe"):
        render("synthesize_prompt", "{{ question.__class__.__mro__ }}", question="x")
    with pytest.raises(HpcChatError, match="unsafe"):  # no changing what it was given
        render("synthesize_prompt", "{{ answers.append(1) }}", answers=[])


@pytest.mark.parametrize("template, why", [
    ("{{ question }", "TemplateSyntaxError: unexpected '}'"),
    ("{{ questoin }}", "UndefinedError: 'questoin' is undefined"),  # not an empty prompt
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ("{{ question.__class__ }}", "SecurityError"),
    ("{{ 'x' * 10**12 }}", "SecurityError: a repetition of 1000000000000"),  # not the memory
    ("{{ 2 ** 100000000 }}", "SecurityError: an exponent of 100000000"),
])
def test_a_template_that_cannot_render_is_refused_at_load(template, why):
    with pytest.raises(ValueError) as info:
        CollaborationSettings(synthesize_prompt=template)
    assert "does not render: " + why in str(info.value)


def test_a_template_that_fails_on_a_real_request_names_its_key():
    settings = CollaborationSettings(synthesize_prompt="{{ answers[1].content }}")  # 2 in the
    with pytest.raises(HpcChatError) as info:  # sample, 1 in this request
        synthesis_prompt(settings, "Why?", answers(("a", "One.")))
    assert str(info.value).startswith("config.collaboration.synthesize_prompt does not render:"
                                      " UndefinedError")


def test_vote_is_a_plurality_ties_to_the_first_agent():
    assert vote(answers(("a", "4"), ("b", " 5 "), ("c", "5")))["agent"] == "b"
    assert vote(answers(("a", "4"), ("b", "5")))["agent"] == "a"


def test_unchanged_ignores_case_and_spacing_only():
    before = answers(("a", "The answer is 4."), ("b", "5"))
    assert unchanged(before, answers(("a", "the  answer is 4."), ("b", "5")))
    assert not unchanged(before, answers(("a", "The answer is 4."), ("b", "6")))


def test_a_requests_mode():
    assert parse_mode("review") is Mode.REVIEW
    with pytest.raises(HpcChatError, match="mode 'vote' is not one of route, synthesize, "
                                           "review"):
        parse_mode("vote")
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                     "hpc_chat_mode": "synthesize"}}
    assert parse_request(line).options["mode"] == "synthesize"
    line["body"]["hpc_chat_mode"] = "debate"
    with pytest.raises(RequestError) as info:
        parse_request(line)
    assert info.value.param == "body.hpc_chat_mode"
    assert body_fields({"mode": "review", "seed": 1}) == {"seed": 1, "hpc_chat_mode": "review"}


def test_remote_model_names(tmp_path, monkeypatch):
    assert remote_model("openai:gpt-4o@https://api.example.org/v1") == RemoteModel(
        model="gpt-4o", base_url="https://api.example.org/v1")
    assert remote_model("default") is None and remote_model("echo") is None
    with pytest.raises(ConfigError, match="write a remote model as openai:MODEL@"):
        remote_model("openai:gpt-4")
    monkeypatch.setenv("HPC_CHAT_HOME", str(tmp_path))
    (tmp_path / "models.yaml").write_text(json.dumps({
        "gpt-4": {"model": "gpt-4o", "base_url": "http://127.0.0.1:9/v1",
                  "api_key_env": "OPENAI_API_KEY", "max_concurrency": 4},
        "broken": {"model": "x", "base_url": "ftp://nowhere"},
        "typo": {"model": "x", "base_url": "http://h/v1", "api_key": "sk-secret"}}))
    found = remote_model("gpt-4")
    assert (found.model, found.max_concurrency, found.api_key_env) == ("gpt-4o", 4,
                                                                       "OPENAI_API_KEY")
    assert available_models()["gpt-4"] == "openai:gpt-4o@http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError) as info:
        remote_model("broken")
    assert str(info.value).startswith(f"{tmp_path / 'models.yaml'}: broken.base_url: ")
    with pytest.raises(ConfigError) as info:
        remote_model("typo")  # a key written in the file is refused, and not repeated
    assert "typo.api_key: Extra inputs are not permitted" in str(info.value)
    assert "sk-secret" not in str(info.value)


@pytest.mark.parametrize("entry, why", [
    ({"base_url": "https://user:pw@api.example.org/v1"}, "must not hold a user or password"),
    ({"base_url": "https://api.example.org/v1?key=sk-1"}, "must not have a query"),
    ({"base_url": "http://gpu-node:8000/v1", "api_key_env": "VLLM_KEY"},
     "would send the key in $VLLM_KEY unencrypted to gpu-node"),
])
def test_a_remote_url_that_would_leak_its_key_is_refused(entry, why, tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_CHAT_HOME", str(tmp_path))
    (tmp_path / "models.yaml").write_text(json.dumps({"big": {"model": "m", **entry}}))
    with pytest.raises(ConfigError) as info:
        remote_model("big")
    assert str(info.value).startswith(f"{tmp_path / 'models.yaml'}: big: Value error, ")
    assert why in str(info.value)
    assert "pw@" not in str(info.value) and "sk-1" not in str(info.value)


def test_plain_http_with_a_key_is_allowed_on_loopback_or_when_the_site_says_so():
    assert RemoteModel(model="m", base_url="http://127.0.0.1:8000/v1", api_key_env="K")
    assert RemoteModel(model="m", base_url="http://localhost:8000/v1", api_key_env="K")
    assert RemoteModel(model="m", base_url="http://gpu-node:8000/v1", api_key_env="K",
                       allow_plain_http=True)
    assert RemoteModel(model="m", base_url="http://gpu-node:8000/v1")  # no key to leak


def run_rounds(mode, agents, ask, **settings):
    return asyncio.run(collaborate(CollaborationSettings(**settings), mode, "Why?", agents,
                                   "judge", ask))


def test_the_replys_finish_reason_is_its_own_not_an_earlier_rounds():
    async def ask(agent, text, final):  # the first answers are cut, the synthesis is not
        return {"agent": agent, "content": f"{agent} says", "usage": {"completion_tokens": 2},
                "finish_reason": "stop" if final else "length"}

    combined = run_rounds(Mode.SYNTHESIZE, ["a", "b"], ask)
    assert combined["finish_reason"] == "stop" and combined["content"] == "judge says"
    result, _ = request_result(0.0, "Why?", combined, error=None, routes=None, code=None,
                               site=None)
    assert result["finish_reason"] == "stop"
    assert [a["finish_reason"] for a in result["rounds"][0]["answers"]] == ["length"] * 2


def test_when_every_reviewer_fails_the_last_good_round_is_synthesized():
    async def ask(agent, text, final):
        if text.startswith("Question:"):  # a review prompt
            return {"agent": agent, "error": "worker lost"}
        return {"agent": agent, "content": text if final else f"{agent}: 4", "usage": {}}

    combined = run_rounds(Mode.REVIEW, ["a", "b"], ask)
    assert [r["step"] for r in combined["rounds"]] == ["answer", "review", "synthesis"]
    assert combined["ok"] and "a: 4" in combined["content"] and "b: 4" in combined["content"]
    assert [e["error"] for e in combined["errors"]] == ["worker lost"] * 2


def test_one_agent_alone_answers_the_reply_itself():
    asked = []

    async def ask(agent, text, final):
        asked.append((agent, text, final))
        return {"agent": agent, "content": "4", "usage": {}}

    for mode in (Mode.SYNTHESIZE, Mode.REVIEW):
        asked.clear()
        combined = run_rounds(mode, ["a"], ask)
        assert asked == [("a", "Why?", True)]  # no review of itself, no synthesis of one
        assert combined["content"] == "4" and combined["primary_agent"] == "a"
