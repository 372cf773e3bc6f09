"""``/v1/responses`` through a real ``hpc-chat serve`` with the real openai SDK: a response
continues its previous one from the stored history (its input tokens include the first turn),
branches stay apart, ``GET`` returns what was stored, unknown ids are 404, ``store: false``
keeps nothing, streaming sends the Responses events, and ``text.format`` is enforced."""

from __future__ import annotations

import json
import stat

import jsonschema
import openai
import pytest

from tests.helpers.server import start_server, stop

pytestmark = pytest.mark.parsl

MODEL = "echo?token_s=0.05"  # the message back, a word every 0.05 s


@pytest.fixture(scope="module")
def server(tmp_path_factory, fixtures):
    tmp = tmp_path_factory.mktemp("responses")
    srv = start_server(tmp, fixtures / "workflows" / "fast.yml", model=MODEL)
    yield srv
    stop(srv)


def prompts_seen(response) -> list[str]:
    """The messages the agent's model was given, from the answer's provenance."""
    agents = response.model_extra["hpc_chat"]["agents"]
    return [m["content"] for m in agents[0]["messages"]]


def test_a_response_continues_its_previous_one_from_the_stored_history(server):
    client = server.client()
    first = client.responses.create(model="balanced_agent", input="alpha beta gamma",
                                    instructions="Repeat the message.")
    assert first.status == "completed" and first.output_text == "alpha beta gamma"
    assert first.id.startswith("resp_") and first.usage.input_tokens > 0
    second = client.responses.create(model="balanced_agent", input="delta",
                                     previous_response_id=first.id)
    assert second.output_text == "delta" and second.previous_response_id == first.id
    # The first turn (its input and its answer) is part of the second's input.
    assert second.usage.input_tokens > first.usage.input_tokens
    assert prompts_seen(second)[-3:] == ["alpha beta gamma", "alpha beta gamma", "delta"]
    # instructions belong to their own response only, as OpenAI's.
    assert "Repeat the message." not in prompts_seen(second)
    # A branch from the first response does not see the second.
    branch = client.responses.create(model="balanced_agent", input="epsilon",
                                     previous_response_id=first.id)
    assert "delta" not in prompts_seen(branch) and prompts_seen(branch)[-1] == "epsilon"
    third = client.responses.create(model="balanced_agent", input="zeta",
                                    previous_response_id=second.id)
    assert prompts_seen(third)[-5:] == ["alpha beta gamma", "alpha beta gamma", "delta",
                                        "delta", "zeta"]
    again = client.responses.retrieve(second.id)
    assert again.id == second.id and again.output_text == "delta"
    assert again.usage.input_tokens == second.usage.input_tokens
    db = server.home / "history.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_unknown_and_unstored_responses_are_404(server):
    client = server.client()
    with pytest.raises(openai.NotFoundError, match="resp_nothing"):
        client.responses.retrieve("resp_nothing")
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="balanced_agent", input="hi",
                                previous_response_id="resp_nothing")
    assert caught.value.body["param"] == "previous_response_id"
    kept_out = client.responses.create(model="balanced_agent", input="private words",
                                       store=False)
    assert kept_out.output_text == "private words" and kept_out.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept_out.id)


def test_a_streamed_response_sends_the_responses_events_and_is_stored(server):
    client = server.client()
    events = list(client.responses.create(model="balanced_agent",
                                          input="one two three four five six", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1  # streamed as decoded, not in one piece
    done = events[-1].response
    assert "".join(deltas) == done.output_text == "one two three four five six"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert client.responses.retrieve(done.id).output_text == done.output_text


def test_text_format_json_schema_is_enforced_and_a_cut_answer_is_incomplete(server):
    client = server.client()
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    answer = client.responses.create(
        model="balanced_agent", input="Paris has two million people",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                         "strict": True}})
    jsonschema.validate(json.loads(answer.output_text), schema)
    assert answer.text.format.type == "json_schema"
    cut = client.responses.create(model="balanced_agent", input="a b c d e f g h",
                                  max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 3


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "web_search"}]}, "tools"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "4"}]}, "input[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"store": "yes"}, "store"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
])
def test_what_cannot_be_served_is_refused_naming_its_key(server, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().responses.create(**{"model": "balanced_agent", "input": "hi", **extra})
    assert caught.value.body["param"] == param, caught.value.body


# ------------------------------------------------------------ /v1/completions, on the same server

def test_text_completions_one_choice_per_prompt_echo_and_logprobs(server):
    """The echo model continues a prompt with its words: each prompt of a list gets its own
    choice, in order; ``echo`` puts the prompt first; the legacy logprobs shape."""
    client = server.client()
    done = client.completions.create(model="balanced_agent", prompt=["alpha beta", "gamma"],
                                      max_tokens=5, logprobs=2)
    assert [c.index for c in done.choices] == [0, 1]
    assert [c.text for c in done.choices] == ["alpha beta", "gamma"]
    first = done.choices[0].logprobs
    assert first.tokens == ["alpha", " beta"] and first.token_logprobs == [0.0, 0.0]
    # offsets count from the prompt's start (its 10 characters), as OpenAI's
    assert first.text_offset == [10, 15] and first.top_logprobs[1] == {" beta": 0.0}
    assert done.usage.completion_tokens == 3
    # No chat template and no system prompt: the prompt is decoded alone.
    assert done.model_extra["hpc_chat"]["prompts"][0]["agents"][0]["messages"] == [
        {"role": "user", "content": "alpha beta"}]
    echoed = client.completions.create(model="balanced_agent", prompt="one two", echo=True)
    assert echoed.choices[0].text == "one twoone two"
    pieces = [c.choices[0].text for c in client.completions.create(
        model="balanced_agent", prompt="a b c d e f", stream=True, max_tokens=6)]
    assert "".join(pieces) == "a b c d e f" and len([p for p in pieces if p]) > 1


@pytest.mark.parametrize("extra, param", [
    ({"suffix": "end"}, "suffix"),
    ({"model": "auto"}, "model"),
    ({"echo": True, "logprobs": 1}, "echo"),
    ({"logprobs": 6}, "logprobs"),
    ({"prompt": ["a", "b"], "stream": True}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"best_of": 3}, "best_of"),
])
def test_a_completion_that_cannot_be_served_is_refused_naming_its_key(server, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().completions.create(**{"model": "balanced_agent", "prompt": "hi",
                                              **extra})
    assert caught.value.body["param"] == param, caught.value.body
