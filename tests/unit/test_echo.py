"""The built-in ``echo`` model: names, answers, pace, and the worker logic around it.

Durations here are lower bounds of known work (N steps x token_s), never machine speed."""

from __future__ import annotations

import asyncio
import time

import pytest

from hpc_chat.agents.config import AgentConfig
from hpc_chat.errors import ModelNotFoundError, ProfileError
from hpc_chat.llm.echo import EchoPace, parse_echo
from hpc_chat.llm.models import ModelSpec, model_location, resolve_model
from hpc_chat.llm.registry import get_batched_engine, get_engine
from hpc_chat.protocol.request import GenRequest
from hpc_chat.sites.registry import load_profile
from hpc_chat.worker.chat import process_chat_batch, process_chat_message

AGENT = AgentConfig.model_validate({
    "name": "echoer", "config": {"model": "echo", "system_prompt": "You repeat things.",
                                 "max_tokens": 64}}).to_dict()


def engine(name: str, n_ctx: int = 2048):
    return get_engine(ModelSpec(path=model_location(name), n_ctx=n_ctx))[0]


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "sys"}, {"role": "user", "content": text}]


def test_names_are_parsed_and_made_canonical():
    assert model_location("echo") == "echo"
    assert model_location("echo?token_s=0.5&tokens=4") == "echo?tokens=4&token_s=0.5"
    assert parse_echo("echo?load_s=2") == EchoPace(load_s=2)
    assert model_location("fake", {"fake": "echo?tokens=3"}) == "echo?tokens=3"


@pytest.mark.parametrize("name, words", [
    ("echo?tokens=0", "tokens"), ("echo?speed=3", "speed"), ("echo?token_s=fast", "token_s"),
    ("echo?tokens=1&tokens=2", "twice"), ("echo?tokens", "tokens"),
    ("echo?token_s=-1", "token_s")])
def test_bad_options_name_the_option(name, words):
    with pytest.raises(ModelNotFoundError) as info:
        model_location(name)
    assert words in str(info.value) and name in str(info.value)


def test_echo_is_not_a_gguf_file():
    with pytest.raises(ModelNotFoundError, match="built-in echo model"):
        resolve_model("echo")


def test_the_answer_is_the_message_and_tokens_are_counted():
    out = engine("echo").chat(msgs("What is MPI?"), max_tokens=50)
    assert out.text == "What is MPI?"
    assert (out.completion_tokens, out.prompt_tokens, out.finish_reason) == (3, 4, "stop")


def test_tokens_repeat_the_message_and_max_tokens_cuts_it():
    e = engine("echo?tokens=7")
    assert e.chat(msgs("a b c"), max_tokens=50).text == "a b c a b c a"
    cut = e.chat(msgs("a b c"), max_tokens=4)
    assert (cut.text, cut.completion_tokens, cut.finish_reason) == ("a b c a", 4, "length")
    stopped = e.chat(msgs("a b STOP"), max_tokens=50, stop=["STOP"])
    assert (stopped.text, stopped.finish_reason) == ("a b", "stop")


def test_pace_makes_work_of_a_known_duration():
    e = engine("echo?tokens=5&token_s=0.05&load_s=0.3")
    assert e.load_s >= 0.3
    started = time.perf_counter()
    e.chat(msgs("x"), max_tokens=50)
    assert time.perf_counter() - started >= 5 * 0.05


def test_batched_echo_decodes_every_sequence_in_one_step(monkeypatch):
    """4 answers of 5 tokens on 2 sequences: 10 decode steps of token_s each, not 20."""
    import hpc_chat.llm.echo as echo_mod

    steps = []
    monkeypatch.setattr(echo_mod.Pace, "step", lambda self: steps.append(self.token_s))
    batched = get_batched_engine(engine("echo?tokens=5&token_s=0.05"), 2)
    out = batched.generate([GenRequest(messages=msgs(f"q{i}"), max_tokens=16)
                            for i in range(4)])
    assert steps == [0.05] * 10  # the batch lasts 10 x token_s
    assert [c.text for c in out] == [" ".join([f"q{i}"] * 5) for i in range(4)]
    assert all(c.extra["batched"] and c.completion_tokens == 5 for c in out)


def test_the_pace_is_work_a_stall_is_not_credited():
    """After the process did not run for a while (here: a sleep between steps, as a SIGSTOP
    would), the steps left still take their time; without a stall, steps keep to schedule."""
    import hpc_chat.llm.echo as echo_mod

    pace = echo_mod.Pace(0.05)
    pace.step()
    time.sleep(0.5)  # the stall: 10 steps' worth
    resumed = time.perf_counter()
    for _ in range(4):
        pace.step()
    assert time.perf_counter() - resumed >= 3 * 0.05  # not all due at once after the stall
    on_time = echo_mod.Pace(0.05)
    for _ in range(4):
        on_time.step()
    assert time.perf_counter() - on_time.start >= 4 * 0.05


def test_the_message_comes_back_as_written():
    text = "line one\n\n  indented   line two"
    assert engine("echo").chat(msgs(text), max_tokens=50).text == text.strip()


def test_batched_echo_refuses_a_prompt_over_the_context_alone():
    batched = get_batched_engine(engine("echo", n_ctx=128), 2)
    out = batched.generate([GenRequest(messages=msgs("w " * 200), max_tokens=8),
                            GenRequest(messages=msgs("fine"), max_tokens=8)])
    assert "context window of 128 tokens" in str(out[0])
    assert out[1].text == "fine"


def test_worker_logic_answers_with_echo_like_a_real_model():
    result = process_chat_message(AGENT, "Hello there", {"options": {"max_tokens": 8}})
    assert result["content"] == "Hello there" and result["model"] == "echo"
    assert result["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "cached_tokens": 0}
    assert result["finish_reason"] == "stop"
    items = [{"message": f"m {i}", "context": {}} for i in range(3)] + \
            [{"message": "  ", "context": {}}]
    out = process_chat_batch(AGENT, items, n_seq=2)
    assert [r.get("content") for r in out[:3]] == ["m 0", "m 1", "m 2"]
    assert out[3]["error"] == "the message is empty" and all(r["batched"] for r in out[:3])


def test_override_beats_the_agents_model_and_the_sites():
    ctx = {"model": {"model": "default", "override": "echo?tokens=2"}}
    real_agent = {**AGENT, "config": {**AGENT["config"], "model": "default"}}
    result = process_chat_message(real_agent, "one two three", ctx)
    assert result["content"] == "one two" and result["model"] == "echo?tokens=2"


def test_a_profile_may_name_echo_and_bad_options_name_the_key(tmp_path):
    good = tmp_path / "e.yaml"
    good.write_text("name: e\nprovider: {type: LocalProvider}\n"
                    "model: {model: 'echo?token_s=0.1&tokens=3'}\n")
    assert load_profile(good).model.model == "echo?tokens=3&token_s=0.1"
    bad = tmp_path / "b.yaml"
    bad.write_text("name: b\nprovider: {type: LocalProvider}\nmodel: {model: 'echo?tokenz=3'}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(bad)
    assert str(bad) in str(info.value) and "model.model" in str(info.value)
    assert "tokenz" in str(info.value)


def test_workflow_with_echo_keeps_history_and_statistics(fixtures, tmp_path):
    from hpc_chat.driver.executors.base import ExecutorConfig
    from hpc_chat.driver.executors.local import LocalExecutor
    from hpc_chat.driver.workflow import ParslChatWorkflow

    async def go():
        wf = ParslChatWorkflow(executor=LocalExecutor(ExecutorConfig(executor_type="local")),
                               history_path=str(tmp_path / "h.db"), model="echo")
        await wf.initialize(str(fixtures / "workflows" / "fast.yml"))
        try:
            first = await wf.process_request("remember teal", conversation_id="c",
                                             agents=["balanced_agent"])
            await wf.process_request("and blue", conversation_id="c", agents=["balanced_agent"])
            turns = await wf.history.messages("c")
            return first, turns, await wf.get_performance_stats()
        finally:
            await wf.shutdown()

    first, turns, stats = asyncio.run(go())
    assert first["ok"] and first["response"] == "remember teal"
    assert [t["content"] for t in turns] == ["remember teal", "remember teal", "and blue",
                                             "and blue"]
    assert stats["successful_requests"] == 2 and stats["completion_tokens"] == 4


def test_workflow_refuses_a_bad_model_override_before_starting(fixtures, tmp_path):
    from hpc_chat.driver.workflow import ParslChatWorkflow
    from hpc_chat.errors import ConfigError

    wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"), model="echo?bogus=1")
    with pytest.raises(ConfigError, match="--model: model 'echo[?]bogus=1'"):
        asyncio.run(wf.initialize(str(fixtures / "workflows" / "fast.yml")))
    assert wf.executor is None  # nothing was started


def test_the_echo_model_reports_a_logprob_per_token_when_asked():
    """Sure of each word it writes: log-probability 0, the word its own likeliest."""
    engine, _ = get_engine(ModelSpec(path="echo"))
    batched = get_batched_engine(engine, 2)
    msgs = [{"role": "user", "content": "one two three"}]
    asked, plain = batched.generate([GenRequest(messages=msgs, logprobs=2),
                                     GenRequest(messages=msgs)])
    content = asked.extra["logprobs"]
    assert [t["token"] for t in content] == ["one", " two", " three"]
    assert all(t["logprob"] == 0.0 and t["top_logprobs"][0]["token"] == t["token"]
               for t in content)
    assert len(content) == asked.completion_tokens and "logprobs" not in plain.extra
