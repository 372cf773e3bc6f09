"""The task context a worker gets (:class:`hpc_chat.protocol.context.TaskContext`): what the
workflow sends, and what a hand-made context of the original design's API may hold."""

import pytest

from hpc_chat.agents.config import AgentConfig
from hpc_chat.protocol.context import SiteModel, TaskContext
from hpc_chat.worker.chat import process_chat_message

AGENT = AgentConfig.model_validate({
    "name": "ctx", "config": {"model": "default", "system_prompt": "Repeat.",
                              "max_tokens": 16}}).to_dict()


def test_the_sent_context_is_plain_data_and_reads_back_the_same():
    sent = TaskContext(history=[{"role": "user", "content": "hi", "agent": "a",
                                 "prompt_tokens": 3}],
                       options={"seed": 4}, model=SiteModel(model="echo", override="echo"))
    plain = sent.model_dump()
    assert isinstance(plain["model"], dict) and plain["stream"] is None
    assert TaskContext.model_validate(plain) == sent


def test_a_hand_made_context_with_keys_of_its_own_still_answers():
    result = process_chat_message(AGENT, "one two three", {
        "model": {"model": "echo"}, "conversation_id": "mine", "options": {"max_tokens": 3}})
    assert result["content"] == "one two three" and result["model"] == "echo"


def test_the_site_model_override_wins_over_the_agents_model():
    agent = {**AGENT, "config": {**AGENT["config"], "model": "no-such-model"}}
    result = process_chat_message(agent, "four five", {"model": {"override": "echo"}})
    assert result["model"] == "echo"


@pytest.mark.parametrize("context, key", [({"history": "not a list"}, "history"),
                                          ({"model": {"engine_slots": 0}}, "engine_slots"),
                                          ({"model": {"prefix_cache_mb": -1}},
                                           "prefix_cache_mb"),
                                          ({"exact": "perhaps"}, "exact")])
def test_a_context_that_is_not_one_is_an_input_error_naming_its_key(context, key):
    with pytest.raises(ValueError, match=f"context.*{key}"):
        process_chat_message(AGENT, "hello", context)
