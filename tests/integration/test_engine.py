"""The real embedded model through llama-cpp-python: answers, seeds, personas, loading once."""

import pytest

from hpc_chat.agents.config import AgentConfig
from hpc_chat.errors import PromptTooLongError
from hpc_chat.llm import registry
from hpc_chat.llm.models import ModelSpec, resolve_model
from hpc_chat.llm.registry import get_engine
from hpc_chat.worker.chat import build_messages, decoded_messages, process_chat_message

pytestmark = pytest.mark.model

QUESTION = "What is a supercomputer used for?"


def agent_dict(i=1, **overrides):
    agent = AgentConfig.from_yaml(f"config/EnhancedCollaborativeAgent_{i}.yml").to_dict()
    agent["config"].update(overrides)
    return agent


@pytest.fixture(scope="module")
def spec():
    return ModelSpec(path=str(resolve_model("default")), n_threads=2)


def test_answer_is_nonempty_text_with_usage_and_timings(spec):
    engine, _ = get_engine(spec)
    out = engine.chat([{"role": "user", "content": QUESTION}], temperature=0.7, max_tokens=32,
                      seed=1)
    assert len(out.text.split()) >= 3
    assert 0 < out.completion_tokens <= 32
    assert out.prompt_tokens > 5
    assert out.generation_s > 0 and out.tokens_per_s > 0


def test_fixed_seed_reproduces_and_another_seed_differs(spec):
    engine, _ = get_engine(spec)
    msgs = [{"role": "system", "content": "You are a storyteller."},
            {"role": "user", "content": "Tell me a story about a cat."}]
    a = engine.chat(msgs, temperature=1.0, max_tokens=40, seed=123).text
    engine.chat([{"role": "user", "content": "unrelated"}], max_tokens=5, seed=9)  # disturb state
    b = engine.chat(msgs, temperature=1.0, max_tokens=40, seed=123).text
    c = engine.chat(msgs, temperature=1.0, max_tokens=40, seed=124).text
    assert a == b
    assert a != c


def test_max_tokens_is_respected(spec):
    engine, _ = get_engine(spec)
    out = engine.chat([{"role": "user", "content": "Write a very long essay about rivers."}],
                      temperature=0.7, max_tokens=8, seed=3)
    assert out.completion_tokens == 8
    assert out.finish_reason == "length"


def test_until_stops_an_unstreamed_answer_at_its_next_token(spec):
    """A task's time limit in the worker's own process (hpc_chat.worker.time_limit): the
    answer stops a few tokens after ``until`` turns true, not at max_tokens."""
    engine, _ = get_engine(spec)
    asked = []

    def until():
        asked.append(1)
        return len(asked) > 3

    out = engine.chat([{"role": "user", "content": "Write a very long essay about rivers."}],
                      temperature=0.7, max_tokens=200, seed=3, until=until)
    assert out.finish_reason == "cancelled" and out.completion_tokens < 10, out


def test_personas_answer_differently():
    context = {"options": {"seed": 5, "max_tokens": 40}}
    creative = process_chat_message(agent_dict(i=1), QUESTION, context)
    analytical = process_chat_message(agent_dict(i=2), QUESTION, context)
    assert creative["agent"] == "creative_agent" and analytical["agent"] == "analytical_agent"
    assert creative["content"] and analytical["content"]
    assert creative["content"] != analytical["content"]


def test_model_loads_once_across_many_calls(spec):
    registry.clear_cache()
    loaded = []
    for i in range(12):
        out = process_chat_message(agent_dict(i=3), f"Say the number {i}.",
                                   {"options": {"seed": i, "max_tokens": 4}})
        loaded.append(out["timings"]["model_loaded_now"])
    info = registry.cache_info()
    assert loaded == [True] + [False] * 11
    assert info["misses"] == 1 and info["hits"] == 11
    assert len(info["loaded"]) == 1


def test_result_shape_and_json_safety():
    import json

    out = process_chat_message(agent_dict(i=2), "Explain why rain falls.",
                               {"options": {"seed": 1, "max_tokens": 12},
                                "history": [{"role": "user", "content": "Hi"},
                                            {"role": "assistant", "content": "Hello!"}]})
    assert {"content", "agent", "model", "usage", "timings", "cached"} <= set(out)
    assert out["usage"]["completion_tokens"] <= 12
    assert out["history_turns_used"] == 2
    assert json.loads(json.dumps(out)) == out
    # No copy of the conversation goes back: the driver has it (decoded_messages).
    assert "messages" not in out["provenance"]
    assert "Hello!" not in json.dumps(out), "the history travelled back in the result"


def test_caching_marks_repeat_requests():
    agent = agent_dict(i=1)  # enable_caching: true in the packaged file
    ctx = {"options": {"seed": 11, "max_tokens": 10}}
    first = process_chat_message(agent, "Imagine a red door.", ctx)
    second = process_chat_message(agent, "Imagine a red door.", ctx)
    assert not first["cached"] and second["cached"]
    assert second["content"] == first["content"]
    third = process_chat_message(agent, "Imagine a red door.", {"options": {"seed": 12,
                                                                            "max_tokens": 10}})
    assert not third["cached"]


def test_prompt_longer_than_context_is_rejected_clearly():
    agent = agent_dict(i=3, n_ctx=256)
    with pytest.raises(PromptTooLongError, match="context window of 256 tokens"):
        process_chat_message(agent, "word " * 400, {"options": {"max_tokens": 16}})


def test_oldest_history_is_dropped_to_fit():
    agent = agent_dict(i=3, n_ctx=512)
    history = []
    for i in range(10):
        history += [{"role": "user", "content": f"question {i} " + "filler " * 30},
                    {"role": "assistant", "content": f"answer {i}"}]
    out = process_chat_message(agent, "And now?", {"history": history,
                                                   "options": {"seed": 1, "max_tokens": 8}})
    assert 0 < out["history_turns_used"] < len(history)
    rebuilt = decoded_messages(build_messages("sys", "And now?", history),
                               out["history_turns_used"])
    assert rebuilt[1:-1] == history[len(history) - out["history_turns_used"]:]
    assert rebuilt[0]["content"] == "sys" and rebuilt[-1]["content"] == "And now?"


def test_missing_model_is_a_config_error():
    from hpc_chat.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="gpt-4"):
        process_chat_message(agent_dict(i=1, model="gpt-4"), "hi", {})


def test_shared_system_prompt_is_reused_without_changing_answers(spec, mocker):
    """The system-prompt chunk stays cached between requests; answers stay reproducible."""
    from hpc_chat.llm.engine import ChatEngine

    engine, _ = get_engine(spec)

    def msgs(q):
        return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": q}]

    first = engine.chat(msgs("Name a fruit."), temperature=0.9, max_tokens=24, seed=8).text
    resets = mocker.spy(engine.llama, "reset")  # a reset would throw the cached chunk away
    engine.chat(msgs("Name a tree."), temperature=0.9, max_tokens=24, seed=1)
    again = engine.chat(msgs("Name a fruit."), temperature=0.9, max_tokens=24, seed=8).text
    assert resets.call_count == 0  # the system prompt was reused, not re-read
    fresh = ChatEngine(spec).chat(msgs("Name a fruit."), temperature=0.9, max_tokens=24,
                                  seed=8).text
    assert first == again == fresh
