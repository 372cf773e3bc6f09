"""OpenAI batch request lines: what is accepted, and the key named when it is not."""

from __future__ import annotations

import pytest

from hpc_chat.openai.batch import (
    ROUTED_MODEL,
    RequestError,
    fingerprint,
    line_options,
    parse_request,
)
from hpc_chat.openai.batch_output import answer_line, error_line
from tests.helpers.requests import line


def test_a_multi_turn_request_with_its_own_system_message():
    req = parse_request(line({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": [{"type": "text", "text": "Another"},
                                     {"type": "text", "text": "?"}]}],
        "max_completion_tokens": 32, "temperature": 0, "top_p": 0.5, "seed": 7, "stop": "\n",
        "response_format": {"type": "text"}}))
    assert req.custom_id == "q1" and req.agents == ["balanced_agent"]
    assert req.system == "Be brief." and req.prompt == "Another?"
    assert req.history == [{"role": "user", "content": "Name a colour."},
                           {"role": "assistant", "content": "Blue."}]
    assert req.options == {"max_tokens": 32, "temperature": 0.0, "top_p": 0.5, "seed": 7,
                           "stop": ["\n"], "response_format": {"type": "text"}}
    assert req.ignored == []  # a text response_format is used: it replaces an agent's own


def test_ignore_eos_reaches_the_worker_as_an_option():
    assert line_options(parse_request(line({"ignore_eos": True})), {})["ignore_eos"] is True
    assert "ignore_eos" not in line_options(parse_request(line({"ignore_eos": False})), {})


def test_the_routed_model_routes():
    assert parse_request(line({"model": ROUTED_MODEL})).agents is None


@pytest.mark.parametrize("bad, param, status", [
    (line(custom_id=""), "custom_id", 400),
    (line(custom_id=5), "custom_id", 400),
    (line(url="/v1/audio/speech"), "url", 404),
    (line(url="/v1/responses"), "body.messages", 400),  # a chat body is no Responses body
    (line(method="GET"), "url", 404),
    (line(body=None) | {"body": "text"}, "body", 400),
    (line({"model": None}), "body.model", 400),
    (line({"messages": []}), "body.messages", 400),
    (line({"messages": [{"role": "tool", "content": "x"}]}), "body.messages[0].tool_call_id",
     400),
    (line({"messages": [{"role": "robot", "content": "x"}]}), "body.messages[0]", 400),
    (line({"messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]},
                        {"role": "tool", "tool_call_id": "c", "content": "1"}]}),
     "body.messages[0].tool_calls[0]", 400),
    (line({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
     "body.messages[0].content", 400),
    (line({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}),
     "body.messages[1]", 400),
    (line({"messages": [{"role": "assistant", "content": "a"}]}), "body.messages", 400),
    (line({"messages": [{"role": "user", "content": "  "}]}), "body.messages", 400),
    (line({"n": 2}), "body.n", 400),
    (line({"max_tokens": 0}), "body.max_tokens", 400),
    (line({"max_completion_tokens": True}), "body.max_completion_tokens", 400),
    (line({"temperature": 3}), "body.temperature", 400),
    (line({"top_p": 0}), "body.top_p", 400),
    (line({"seed": -1}), "body.seed", 400),
    (line({"stop": ["a", ""]}), "body.stop", 400),
    (line({"stop": ["a"] * 5}), "body.stop", 400),
    (line({"ignore_eos": 1}), "body.ignore_eos", 400),
    (line({"ignore_eos": True, "logprobs": True}), "body.ignore_eos", 400),
    (line({"ignore_eos": True, "response_format": {"type": "json_object"}}),
     "body.ignore_eos", 400),
])
def test_a_bad_request_names_its_key(bad, param, status):
    with pytest.raises(RequestError) as caught:
        parse_request(bad)
    assert caught.value.param == param and caught.value.status == status
    assert param.split("[")[0] in str(caught.value) or param == "url"


def test_an_edited_request_has_another_fingerprint():
    a = parse_request(line({"seed": 1}))
    assert parse_request(line({"seed": 1})).fingerprint == a.fingerprint
    assert parse_request(line({"seed": 2})).fingerprint != a.fingerprint
    assert fingerprint({"b": 1, "a": 2}) == fingerprint({"a": 2, "b": 1})


def test_output_and_error_lines_have_openais_shape():
    result = {"response": "Blue.", "finish_reason": "length", "prompt_tokens": 5,
              "completion_tokens": 2}
    prov = {"hpc_chat": "0.1.0", "agents": [{"model_sha256": "ab" * 32}]}
    out = answer_line("q1", "balanced_agent", result, line=3, request_fingerprint="sha256:x",
                      finished_at=1700000000.5, provenance=prov)
    assert out["id"].startswith("batch_req_") and out["error"] is None
    body = out["response"]["body"]
    assert out["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Blue."
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    assert body["system_fingerprint"] == "hpc_chat-0.1.0-" + "ab" * 6
    failed = error_line("q2", "unknown model", line=4, kind="input", request_fingerprint=None,
                        finished_at=1.0, status=404, code="model_not_found",
                        param="body.model")
    err = failed["response"]["body"]["error"]
    assert failed["response"]["status_code"] == 404
    assert err == {"message": "unknown model", "type": "invalid_request_error",
                   "param": "body.model", "code": "model_not_found"}
    broken = error_line(None, "line 5: invalid JSON", line=5, kind="input",
                        request_fingerprint=None, finished_at=1.0)
    assert broken["response"] is None and broken["error"]["message"] == "line 5: invalid JSON"


def test_the_worker_cache_tells_requests_apart_by_every_sampling_setting():
    """Same prompt and seed, another stop or top_p: another answer, never a cache hit."""
    import yaml

    from hpc_chat.util.configfile import PACKAGED_CONFIG_DIR
    from hpc_chat.worker.chat import prepare

    agent = yaml.safe_load((PACKAGED_CONFIG_DIR / "EnhancedCollaborativeAgent_3.yml")
                           .read_text())
    site = {"model": "echo"}

    def key(**options):
        return prepare(agent, "alpha beta", {"options": {"seed": 1, **options},
                                             "model": site}).key
    assert len({key(), key(stop=["beta"]), key(top_p=0.5), key(top_k=5),
                key(repeat_penalty=1.3), key(ignore_eos=True)}) == 6
    assert key(stop=["beta"]) == key(stop=["beta"])


def test_an_unseeded_request_gets_a_seed_recorded():
    import yaml

    from hpc_chat.util.configfile import PACKAGED_CONFIG_DIR
    from hpc_chat.worker.chat import prepare

    agent = yaml.safe_load((PACKAGED_CONFIG_DIR / "EnhancedCollaborativeAgent_3.yml")
                           .read_text())
    drawn = prepare(agent, "hi", {"model": {"model": "echo"}}).request.seed
    assert isinstance(drawn, int) and 0 <= drawn < 2**31


def completion(**body):
    return {"custom_id": "t", "method": "POST", "url": "/v1/completions",
            "body": {"model": "balanced_agent", "prompt": "Once upon", **body}}


def test_a_text_completion_line_is_the_chat_request_of_its_prompt():
    req = parse_request(completion(max_tokens=8, logprobs=2))
    assert (req.url, req.prompt, req.echo, req.history, req.system) == \
        ("/v1/completions", "Once upon", False, [], None)
    assert req.options == {"max_tokens": 8, "logprobs": 2, "text_completion": True,
                           "mode": "route"}
    # max_tokens: the line's, else the run's (batch --max-tokens), else OpenAI's 16 here
    assert line_options(req, {"max_tokens": 200})["max_tokens"] == 8
    assert line_options(parse_request(completion()), {"max_tokens": 200})["max_tokens"] == 200
    assert line_options(parse_request(completion()), {})["max_tokens"] == 16
    with pytest.raises(RequestError, match="takes no response_format"):  # batch --schema
        line_options(req, {"response_format": {"type": "json_object"}})
    echoed = parse_request(completion(max_tokens=8, echo=True))
    assert echoed.echo and echoed.fingerprint != req.fingerprint


@pytest.mark.parametrize("body, param, says", [
    ({"prompt": ["a", "b"]}, "body.prompt", "one prompt: write one line per prompt"),
    ({"prompt": ""}, "body.prompt", "body.prompt must be a non-empty string"),
    ({"model": "auto"}, "body.model", "continues one model's text"),
    ({"stream": True}, "body.stream", "not streamed"),
    ({"suffix": "end"}, "body.suffix", "fill in the middle"),
    ({"hpc_chat_mode": "review"}, "body.hpc_chat_mode", "not supported"),
])
def test_a_text_completion_line_that_cannot_run_names_its_key(body, param, says):
    with pytest.raises(RequestError) as info:
        parse_request(completion(**body))
    assert info.value.param == param and says in str(info.value)


def test_ignore_eos_with_an_agents_own_format_names_the_agent_and_the_way_out():
    """The request has no format, but its agent's YAML has one: the refusal says so, and how
    to replace it; provenance keeps ignore_eos, so a replay sends it again."""
    import yaml

    from hpc_chat.util.configfile import PACKAGED_CONFIG_DIR
    from hpc_chat.worker.chat import prepare, provenance

    agent = yaml.safe_load((PACKAGED_CONFIG_DIR / "EnhancedCollaborativeAgent_3.yml")
                           .read_text())
    site = {"model": "echo"}
    extractor = {**agent, "config": {**agent["config"],
                                     "response_format": {"type": "json_object"}}}
    with pytest.raises(ValueError, match="ignore_eos cannot be combined with agent "
                                         "balanced_agent's own format") as caught:
        prepare(extractor, "hi", {"options": {"ignore_eos": True}, "model": site})
    assert 'send response_format {"type": "text"} with ignore_eos' in str(caught.value)
    text = {"response_format": {"type": "text"}, "ignore_eos": True}
    prep = prepare(extractor, "hi", {"options": text, "model": site})
    assert prep.request.ignore_eos
    ran = {"content": "x", "worker": {"host": "h"}, "engine": None, "batched": False,
           "timings": {"start": 1.0, "end": 2.0}}
    assert provenance(prep, prep.request, ran)["sampling"]["ignore_eos"] is True
    with pytest.raises(ValueError, match="or logprobs: leave one of them out"):
        prepare(agent, "hi", {"options": {"ignore_eos": True, "logprobs": 0}, "model": site})
