"""A Responses request as the chat body the server answers, and its answer as a ``response``
object (hpc_chat.openai.responses): what goes to the model, what is kept for the next."""

import pytest

from hpc_chat.openai.params import RequestError
from hpc_chat.openai.responses import chat_body, response_object, turns

EARLIER = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "uno"}]


def test_instructions_and_system_items_come_first_and_are_not_kept():
    chat, new = chat_body({"model": "a", "instructions": "Be brief.", "input": [
        {"role": "developer", "content": "Use SI units."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "two"}]}]}, EARLIER)
    assert chat["messages"] == [{"role": "system", "content": "Be brief.\n\nUse SI units."},
                                *EARLIER, {"role": "user", "content": "two"}]
    assert new == [{"role": "user", "content": "two"}]
    assert turns(new, {"response": "dos"}) == [{"role": "user", "content": "two"},
                                               {"role": "assistant", "content": "dos"}]


def test_the_settings_map_onto_a_chat_completion():
    chat, _ = chat_body({"model": "a", "input": "hi", "max_output_tokens": 7,
                         "temperature": 0.0, "top_p": 0.5, "stream": True,
                         "text": {"format": {"type": "json_schema", "name": "n",
                                             "schema": {"type": "object"}, "strict": True}}},
                        [])
    assert chat == {"model": "a", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 7, "temperature": 0.0, "top_p": 0.5, "stream": True,
                    "response_format": {"type": "json_schema", "json_schema": {
                        "name": "n", "schema": {"type": "object"}, "strict": True}}}


@pytest.mark.parametrize("body, param", [
    ({"input": ""}, "input"),
    ({"input": [{"role": "assistant", "content": "x"}]}, "input"),
    ({"input": [{"role": "critic", "content": "x"}]}, "input[0]"),
    ({"input": "hi", "instructions": ["x"]}, "instructions"),
    ({"input": "hi", "frobnicate": 1}, "frobnicate"),
    ({"input": "hi", "tools": [{"type": "function", "name": "f"}]}, "tools"),
    ({"input": "hi", "truncation": "auto"}, "truncation"),
])
def test_a_request_that_cannot_be_answered_names_its_key(body, param):
    with pytest.raises(RequestError) as caught:
        chat_body({"model": "a", **body}, [])
    assert caught.value.param == param


def test_an_answer_cut_at_max_output_tokens_is_incomplete():
    obj = response_object("resp_1", {"model": "a", "max_output_tokens": 3}, 0.0, result={
        "response": "a b c", "finish_reason": "length", "prompt_tokens": 5,
        "completion_tokens": 3})
    assert obj["status"] == "incomplete"
    assert obj["incomplete_details"] == {"reason": "max_output_tokens"}
    assert obj["output"][0]["content"][0]["text"] == "a b c"
    assert obj["usage"]["total_tokens"] == 8
