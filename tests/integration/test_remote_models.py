"""Agents whose model is served elsewhere over OpenAI's API: a second real ``hpc-chat serve``
on loopback is the remote endpoint (its echo model makes the answers known), reached directly
or through a proxy that forces its 429 and timeout paths."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from hpc_chat.driver.workflow import ParslChatWorkflow
from tests.helpers.flaky_proxy import ECHO_KEY, HANG, TOO_MANY, FlakyProxy
from tests.helpers.server import start_server, stop

QUESTION = "Imagine a story and analyze the data"  # routed to creative and analytical


@pytest.fixture(scope="module")
def peer(tmp_path_factory, fixtures):
    """The remote endpoint: answers of 4 words, a decode step each 0.25 s (1 s an answer)."""
    server = start_server(tmp_path_factory.mktemp("peer"), fixtures / "workflows" / "fast.yml",
                          model="echo?tokens=4&token_s=0.25")
    yield server
    stop(server)


def home_with(tmp_path, models: dict) -> str:
    """An HPC_CHAT_HOME whose models.yaml says ``models`` (local agents: the echo model)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    (home / "models.yaml").write_text(json.dumps({"default": "echo", **models}))
    return str(home)


def remote(url: str, **extra) -> dict:
    return {"model": "balanced_agent", "base_url": url, "api_key_env": "PEER_KEY", **extra}


def ask(fixtures, monkeypatch, tmp_path, models, key, *questions, agents=("creative_agent",)):
    monkeypatch.setenv("HPC_CHAT_HOME", home_with(tmp_path, models))
    monkeypatch.setenv("PEER_KEY", key)

    async def go():
        wf = ParslChatWorkflow()
        await wf.initialize(fixtures / "workflows" / "hybrid.yml")
        try:
            return await asyncio.gather(*(wf.process_request(
                q, agents=list(agents), options={"mode": "route"}) for q in questions))
        finally:
            await wf.shutdown()

    return asyncio.run(go())


def test_the_design_documents_gpt4_agent_runs_on_a_remote_server_by_models_yaml_alone(
        peer, fixtures, tmp_path):
    env = {**os.environ, "HPC_CHAT_HOME": home_with(tmp_path, {"gpt-4": remote(peer.url)}),
           "PEER_KEY": peer.key}
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_chat", "--debug", "ask", QUESTION, "--json", "--server",
         "off", "--config", str(fixtures / "workflows" / "hybrid.yml")],
        capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    assert peer.key not in proc.stdout + proc.stderr  # never in a result or a log
    result = json.loads(proc.stdout)
    assert result["mode"] == "synthesize"
    first = {a["agent"]: a for a in result["rounds"][0]["answers"]}
    assert first["creative_agent"]["model"] == f"openai:balanced_agent@{peer.url}"
    assert first["creative_agent"]["content"] == "Imagine a story and"  # the peer's echo
    assert first["analytical_agent"]["content"] == QUESTION  # local echo: the question
    made = next(r for r in result["responses"] if r["agent"] == "creative_agent")
    assert made["provenance"]["endpoint"] == peer.url
    assert made["provenance"]["model"] == "balanced_agent"  # as the endpoint reported it
    assert made["provenance"]["sampling"]["temperature"] == 0.9  # the seed agent's own
    assert made["usage"]["completion_tokens"] == 4
    assert result["rounds"][1]["answers"][0]["agent"] == "balanced_agent"


def test_a_429_is_tried_again_and_a_bound_holds_the_calls_in_flight(
        peer, fixtures, tmp_path, monkeypatch):
    proxy = FlakyProxy(peer.url, [TOO_MANY, TOO_MANY])
    try:
        results = ask(fixtures, monkeypatch, tmp_path,
                      {"gpt-4": remote(proxy.url, max_retries=2, max_concurrency=1)}, peer.key,
                      "story one two three", "story four five six", "story seven eight")
    finally:
        proxy.close()
    assert all(r["ok"] for r in results), [r["error"] for r in results]
    assert sorted(r["response"] for r in results) == [
        "story four five six", "story one two three", "story seven eight story"]
    assert len(proxy.seen) == 5  # two refused, then each of the three once
    assert proxy.most_in_flight == 1  # max_concurrency: 1
    assert all(s["authorization"] == f"Bearer {peer.key}" for s in proxy.seen)


def test_a_remote_that_keeps_refusing_fails_that_answer_with_a_clear_error(
        peer, fixtures, tmp_path, monkeypatch):
    proxy = FlakyProxy(peer.url, [TOO_MANY] * 5)
    try:
        (result,) = ask(fixtures, monkeypatch, tmp_path,
                        {"gpt-4": remote(proxy.url, max_retries=1)}, peer.key, QUESTION)
    finally:
        proxy.close()
    assert not result["ok"] and result["error_code"] == "generation_failed"
    assert result["error"] == (f"creative_agent: the remote model openai:balanced_agent@"
                               f"{proxy.url} answered HTTP 429 (after 1 retries): slow down")
    assert len(proxy.seen) == 2
    assert peer.key not in json.dumps(result)


def test_a_key_the_remote_echoes_in_a_long_error_is_never_repeated(
        peer, fixtures, tmp_path, monkeypatch):
    """A 401 whose long message ends with the Authorization header (with the key in it the
    message runs past the 300 characters kept, so a cut after the fact would leave a prefix
    of the key): the key is replaced by its variable's name first, so no part of it shows."""
    proxy = FlakyProxy(peer.url, [ECHO_KEY])
    try:
        (result,) = ask(fixtures, monkeypatch, tmp_path, {"gpt-4": remote(proxy.url)},
                        peer.key, QUESTION)
    finally:
        proxy.close()
    assert not result["ok"] and "answered HTTP 401" in result["error"]
    assert proxy.seen[0]["authorization"] == f"Bearer {peer.key}"  # it was sent, and echoed
    assert "bad key: Bearer $PEER_KEY" in result["error"]
    assert peer.key[:8] not in json.dumps(result)


def test_what_only_our_engine_does_is_refused_for_a_remote_model(
        peer, fixtures, tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_CHAT_HOME", home_with(tmp_path, {"gpt-4": remote(peer.url)}))
    monkeypatch.setenv("PEER_KEY", peer.key)

    async def go():
        wf = ParslChatWorkflow()
        await wf.initialize(fixtures / "workflows" / "hybrid.yml")
        try:
            return [await wf.process_request("Once upon", agents=["creative_agent"],
                                             options={"mode": "route", **extra})
                    for extra in ({"text_completion": True}, {"logprobs": 0},
                                  {"ignore_eos": True})]
        finally:
            await wf.shutdown()

    raw, logprobs, endless = asyncio.run(go())
    assert raw["error_code"] == logprobs["error_code"] == endless["error_code"] == \
        "invalid_request"
    assert "ignore_eos needs hpc_chat's own engine" in endless["error"]
    assert raw["error"].startswith("creative_agent: a text completion (a raw prompt, no chat "
                                   "template) needs hpc_chat's own engine")
    assert "logprobs needs hpc_chat's own engine" in logprobs["error"]


def test_a_remote_that_does_not_answer_times_out(peer, fixtures, tmp_path, monkeypatch):
    proxy = FlakyProxy(peer.url, [HANG])
    try:
        (result,) = ask(fixtures, monkeypatch, tmp_path,
                        {"gpt-4": remote(proxy.url, timeout_s=1, max_retries=0)}, peer.key,
                        QUESTION)
    finally:
        proxy.close()
    assert not result["ok"]
    assert "did not answer within timeout_s=1 (after 0 retries)" in result["error"]


def test_a_missing_key_is_named_before_anything_is_sent(peer, fixtures, tmp_path, monkeypatch):
    (result,) = ask(fixtures, monkeypatch, tmp_path, {"gpt-4": remote(peer.url)}, "", QUESTION)
    assert not result["ok"]
    assert "needs an API key in $PEER_KEY, which is not set" in result["error"]


def test_serve_streams_a_remote_agents_answer_as_it_comes(peer, fixtures, tmp_path):
    home = home_with(tmp_path, {"gpt-4": remote(peer.url)})
    server = start_server(tmp_path / "hybrid", fixtures / "workflows" / "hybrid.yml", model=None,
                          env={"HPC_CHAT_HOME": home, "PEER_KEY": peer.key})
    try:
        chunks = [c.choices[0].delta.content for c in server.client().chat.completions.create(
            model="creative_agent", stream=True,
            messages=[{"role": "user", "content": "one two three four five"}]) if c.choices]
        pieces = [c for c in chunks if c]
        assert "".join(pieces) == "one two three four"
        assert len(pieces) >= 2  # it came as the peer decoded it, not whole at the end
        log = (tmp_path / "hybrid" / "serve.log").read_text()
        assert peer.key not in log
    finally:
        stop(server)
