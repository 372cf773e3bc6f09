"""Collaboration modes end to end on real Parsl workers (the echo model makes what each agent
saw readable in its answer), once with the real model, and the CLI's ``--mode``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys

import pytest

from hpc_chat.agents.modes import REVIEW_PROMPT, SYNTHESIZE_PROMPT, render
from hpc_chat.driver.workflow import ParslChatWorkflow

pytestmark = [pytest.mark.parsl]

QUESTION = "Imagine a story and analyze the data"  # routed to creative and analytical
LONG = {"max_tokens": 1000}  # the workflow's 24 would cut the echoed prompts


@pytest.fixture(scope="module")
def echo_wf(loop, fixtures, tmp_path_factory):
    """The echo model answers with its whole prompt, so each answer shows what it was asked."""
    wf = ParslChatWorkflow(model="echo", history_path=str(
        tmp_path_factory.mktemp("collab") / "history.db"))
    loop.run_until_complete(wf.initialize(fixtures / "workflows" / "collab.yml"))
    loop.run_until_complete(wf.wait_for_workers(2, timeout=60))
    yield wf
    loop.run_until_complete(wf.shutdown())


def asked(answer: dict) -> str:
    """The user message an agent decoded (its provenance's last message)."""
    return answer["provenance"]["messages"][-1]["content"]


def test_synthesize_answers_then_the_aggregator_writes_one_reply(loop, echo_wf):
    result = loop.run_until_complete(echo_wf.process_request(
        QUESTION, conversation_id="synth", options={"mode": "synthesize", **LONG}))
    assert result["ok"], result["error"]
    assert result["mode"] == "synthesize"
    first, synthesis = result["rounds"]
    assert (first["step"], synthesis["step"]) == ("answer", "synthesis")
    assert [a["agent"] for a in first["answers"]] == ["creative_agent", "analytical_agent"]
    assert all(a["content"] == QUESTION for a in first["answers"])  # echo: the question
    expected = render("synthesize_prompt", SYNTHESIZE_PROMPT, question=QUESTION,
                      answers=[{"agent": a["agent"], "content": a["content"]}
                               for a in first["answers"]])
    (reply,) = synthesis["answers"]
    assert reply["agent"] == "balanced_agent" and reply["content"] == expected
    assert result["response"] == expected
    assert f"Answer 2:\n{QUESTION}" in expected
    # every round's answers, whole, with their provenance; usage is what all of them cost
    by_step = [(r["step"], r["agent"]) for r in result["responses"]]
    assert by_step == [("answer", "creative_agent"), ("answer", "analytical_agent"),
                       ("synthesis", "balanced_agent")]
    assert asked(result["responses"][2]) == expected
    assert result["completion_tokens"] == sum(r["usage"]["completion_tokens"]
                                              for r in result["responses"])
    # the history keeps the reply as the turn and the rounds beside it
    turns = loop.run_until_complete(echo_wf.history.messages("synth"))
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[1]["content"] == expected
    assert [r["step"] for r in turns[1]["rounds"]] == ["answer", "synthesis"]
    db = sqlite3.connect(echo_wf.history.path)
    stored = db.execute("SELECT rounds FROM messages WHERE role = 'assistant'").fetchall()
    assert json.loads(stored[-1][0])[1]["answers"][0]["agent"] == "balanced_agent"


def test_review_shows_each_agent_the_others_answers_and_votes(loop, echo_wf):
    wf = echo_wf
    settings = wf.loaded.settings.collaboration
    wf.loaded.settings.collaboration = settings.model_copy(update={"finish": "vote",
                                                                   "rounds": 2})
    try:
        result = loop.run_until_complete(wf.process_request(
            QUESTION, agents=["creative_agent", "analytical_agent", "balanced_agent"],
            options={"mode": "review", **LONG}))
    finally:
        wf.loaded.settings.collaboration = settings
    assert result["ok"], result["error"]
    steps = [r["step"] for r in result["rounds"]]
    assert steps == ["answer", "review", "review"]  # echo answers change: no early stop
    first, review1, review2 = result["rounds"]
    for answer in review1["answers"]:
        others = [a["content"] for a in first["answers"] if a["agent"] != answer["agent"]]
        own = next(a["content"] for a in first["answers"] if a["agent"] == answer["agent"])
        assert answer["content"] == render("review_prompt", REVIEW_PROMPT,
                                           question=QUESTION, own=own,
                                           others=[{"content": o} for o in others], round=1)
    for answer in review2["answers"]:  # round 2 quotes round 1, each agent's own apart
        mine = next(a for a in review1["answers"] if a["agent"] == answer["agent"])
        others = [a for a in review1["answers"] if a["agent"] != answer["agent"]]
        assert answer["content"].count("Another assistant's answer:") >= len(others)
        assert f"Your previous answer:\n{mine['content']}" in answer["content"]
    # three different texts: the vote is a tie, won by the agent asked first
    assert result["response"] == review2["answers"][0]["content"]
    assert result["agents"] == ["creative_agent", "analytical_agent", "balanced_agent"]


def test_review_stops_once_no_answer_changes(loop, fixtures, tmp_path):
    """Echo answers of 3 words: the first 3 words of each prompt. Round 1's prompts all begin
    "Question: <question>", so do round 2's: unchanged, the rounds stop before the third."""
    async def go():
        wf = ParslChatWorkflow(model="echo?tokens=3", history_path=str(tmp_path / "h.db"))
        await wf.initialize(fixtures / "workflows" / "collab.yml")
        try:
            return await wf.process_request(QUESTION, options={"mode": "review"})
        finally:
            await wf.shutdown()

    result = asyncio.run(go())
    assert result["ok"], result["error"]
    assert [r["step"] for r in result["rounds"]] == ["answer", "review", "review",
                                                     "synthesis"]
    _, r1, r2, _ = result["rounds"]
    assert [a["content"] for a in r1["answers"]] == [a["content"] for a in r2["answers"]] == \
        ["Question: Imagine a"] * 2
    assert result["response"] == "You have been"  # the synthesis prompt's first 3 words


def test_each_prompt_goes_on_to_its_next_round_without_waiting_for_others(fixtures, tmp_path):
    """Two prompts at once, in one micro-batch: one with 2-token answers, one with 100 (0.1 s
    per decode step: its first round lasts at least 10 s). The short one's synthesis is done
    while the long one's first round is still decoding: its answers came back on their own,
    not with the micro-batch."""
    async def go():
        wf = ParslChatWorkflow(model="echo?tokens=100&token_s=0.1",
                               history_path=str(tmp_path / "h.db"))
        await wf.initialize(fixtures / "workflows" / "collab.yml")
        try:
            await wf.wait_for_workers(4, timeout=60)  # a worker free for the synthesis
            slow = wf.submit_request(QUESTION, options={"mode": "synthesize", "max_tokens": 100})
            fast = wf.submit_request(QUESTION, options={"mode": "synthesize", "max_tokens": 2})
            return await slow, await fast
        finally:
            await wf.shutdown()

    slow, fast = asyncio.run(go())
    assert slow["ok"] and fast["ok"], (slow["error"], fast["error"])
    fast_synthesis = next(r for r in fast["responses"] if r["step"] == "synthesis")
    slow_first_end = min(r["timings"]["end"] for r in slow["responses"]
                         if r["step"] == "answer")
    assert fast_synthesis["timings"]["end"] < slow_first_end


def test_a_format_applies_to_the_synthesized_reply_only(loop, echo_wf):
    schema = {"type": "object", "properties": {"summary": {"type": "string"}},
              "required": ["summary"], "additionalProperties": False}
    result = loop.run_until_complete(echo_wf.process_request(QUESTION, options={
        "mode": "synthesize", "response_format": {
            "type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}))
    assert result["ok"], result["error"]
    assert all(a["content"] == QUESTION for a in result["rounds"][0]["answers"])
    assert set(json.loads(result["response"])) == {"summary"}
    tools = loop.run_until_complete(echo_wf.process_request(QUESTION, options={
        "mode": "review", "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object"}}}]}))
    assert not tools["ok"] and tools["error_code"] == "invalid_request"
    assert "mode route" in tools["error"]


def test_a_vote_refuses_a_format_and_a_failing_template_is_one_clear_error(loop, echo_wf):
    wf = echo_wf
    settings = wf.loaded.settings.collaboration
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    wf.loaded.settings.collaboration = settings.model_copy(update={"finish": "vote"})
    try:
        voted = loop.run_until_complete(wf.process_request(QUESTION, options={
            "mode": "review", "response_format": fmt}))
    finally:
        wf.loaded.settings.collaboration = settings
    assert not voted["ok"] and voted["error_code"] == "invalid_request"
    assert "ends in a vote (collaboration.finish)" in voted["error"]
    # a template that renders at load but not on this request's answers (model_copy skips
    # the load's trial render): the request fails naming the key, its first round kept
    wf.loaded.settings.collaboration = settings.model_copy(
        update={"synthesize_prompt": "{{ answers[5].content }}"})
    try:
        broken = loop.run_until_complete(wf.process_request(QUESTION, options={
            "mode": "synthesize", **LONG}))
    finally:
        wf.loaded.settings.collaboration = settings
    assert not broken["ok"]
    assert broken["error"].startswith("config.collaboration.synthesize_prompt does not render: "
                                      "UndefinedError"), broken["error"]
    assert [r["step"] for r in broken["rounds"]] == ["answer"]
    assert all(a["content"] == QUESTION for a in broken["rounds"][0]["answers"])


def test_an_unknown_mode_is_one_clear_error(loop, echo_wf):
    result = loop.run_until_complete(echo_wf.process_request(QUESTION,
                                                             options={"mode": "debate"}))
    assert not result["ok"] and result["error_kind"] == "input"
    assert result["error"] == "mode 'debate' is not one of route, synthesize, review"


@pytest.mark.model
def test_synthesize_with_the_real_model(fixtures, tmp_path):
    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"))
        await wf.initialize(fixtures / "workflows" / "collab.yml")
        try:
            return await wf.process_request(QUESTION, options={"mode": "synthesize",
                                                               "max_tokens": 16})
        finally:
            await wf.shutdown()

    result = asyncio.run(go())
    assert result["ok"], result["error"]
    first, synthesis = result["rounds"]
    assert len(first["answers"]) == 2 and all(a["content"].strip() for a in first["answers"])
    (reply,) = synthesis["answers"]
    assert reply["agent"] == "balanced_agent" and reply["content"].strip()
    assert result["response"] == reply["content"]
    decoded = asked(result["responses"][-1])
    assert all(a["content"] in decoded for a in first["answers"])  # it read both answers
    assert result["responses"][-1]["usage"]["prompt_tokens"] > \
        max(a["usage"]["prompt_tokens"] for a in first["answers"])


def test_cli_mode_prints_the_rounds_in_json(fixtures, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_chat", "ask", QUESTION, "--mode", "review", "--json",
         "--config", str(fixtures / "workflows" / "local-echo.yml"), "--model", "echo",
         "--server", "off"], capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "HPC_CHAT_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mode"] == "review"
    assert [r["step"] for r in result["rounds"]] == ["answer", "review", "review",
                                                     "synthesis"]
    bad = subprocess.run(
        [sys.executable, "-m", "hpc_chat", "ask", "hi", "--mode", "vote", "--server", "off"],
        capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "'vote' is not one of" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_serve_takes_the_mode_in_the_body_and_streams_the_synthesis(fixtures, tmp_path):
    from tests.helpers.server import start_server, stop

    server = start_server(tmp_path, fixtures / "workflows" / "collab.yml",
                          model="echo?tokens=6&token_s=0.1")
    try:
        client = server.client()
        messages = [{"role": "user", "content": QUESTION}]
        whole = client.chat.completions.create(model="auto", messages=messages,
                                               extra_body={"hpc_chat_mode": "review"})
        made = whole.model_extra["hpc_chat"]
        assert made["mode"] == "review"
        assert [r["step"] for r in made["rounds"]] == ["answer", "review", "review",
                                                       "synthesis"]  # unchanged: stopped
        assert whole.choices[0].message.content == made["rounds"][-1]["answers"][0]["content"]
        scored = client.chat.completions.create(model="auto", messages=messages, logprobs=True,
                                                extra_body={"hpc_chat_mode": "synthesize"})
        tokens = "".join(t.token for t in scored.choices[0].logprobs.content)  # the reply's
        assert tokens.strip() == scored.choices[0].message.content == \
            "You have been given answers from"
        pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
            model="auto", messages=messages, stream=True,
            extra_body={"hpc_chat_mode": "synthesize"}) if c.choices and
            c.choices[0].delta.content]
        assert "".join(pieces) == "You have been given answers from"  # the synthesis's echo
        assert len(pieces) >= 2  # as the aggregator wrote it
        import openai

        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="auto", messages=messages,
                                           extra_body={"hpc_chat_mode": "debate"})
        assert info.value.body["param"] == "hpc_chat_mode"
        response = client.responses.create(model="auto", input=QUESTION,
                                            extra_body={"hpc_chat_mode": "synthesize"})
        assert response.output_text == "You have been given answers from"
    finally:
        stop(server)


def test_cli_batch_mode_keeps_the_rounds_in_each_lines_provenance(fixtures, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": str(i), "prompt": f"{QUESTION} {i}"}) + "\n"
                               for i in range(3)))
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_chat", "batch", str(prompts), "-o", str(out),
         "--mode", "synthesize", "--max-tokens", "1000", "--config",
         str(fixtures / "workflows" / "local-echo.yml"), "--model", "echo", "--server", "off"],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "HPC_CHAT_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == ["0", "1", "2"]
    for line in lines:
        assert line["ok"] and line["response"].startswith("You have been given answers")
        made = line["provenance"]
        assert made["mode"] == "synthesize"
        assert [r["step"] for r in made["rounds"]] == ["answer", "synthesis"]
        assert f"{QUESTION} {line['id']}" in line["response"]  # its own prompt's answers
