"""Structured outputs without a model: schemas compiled or refused (fail closed, naming the
keyword), answers validated, the echo model's instances, and the request parameters refused
when they would change the answer."""

from __future__ import annotations

import json

import pytest

from hpc_chat.errors import FormatError
from hpc_chat.llm.echo import EchoBatchedEngine, EchoEngine
from hpc_chat.llm.models import ModelSpec
from hpc_chat.openai.batch import RequestError, parse_request
from hpc_chat.protocol.failure import FailureCode, failure_code
from hpc_chat.protocol.output_format import FormatKind
from hpc_chat.protocol.request import GenRequest
from hpc_chat.structured.compile import line_over_run, output_format
from hpc_chat.structured.instance import instance
from hpc_chat.structured.validate import check

CITY = {"type": "object", "properties": {
    "city": {"type": "string"}, "population": {"type": "integer"},
    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}},
    "required": ["city", "population", "tags"], "additionalProperties": False}


def schema_format(schema, name="city"):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                                                   "strict": True}}


def test_a_schema_compiles_to_a_grammar_with_its_fingerprint():
    fmt = output_format(schema_format(CITY))
    assert fmt.kind is FormatKind.JSON_SCHEMA and fmt.name == "city"
    assert fmt.gbnf.startswith("city-kv ::=") or "root ::=" in fmt.gbnf
    assert '"\\"city\\""' in fmt.gbnf and fmt.json_schema == CITY and len(fmt.sha256) == 64
    # one compile per schema: the same schema gives the same (cached) grammar
    assert output_format(schema_format(json.loads(json.dumps(CITY)))).gbnf == fmt.gbnf
    # the JSON string rule admits no raw control character (strict parsers refuse them)
    assert "\\x00-\\x1F" in fmt.gbnf


def test_text_and_json_object():
    assert output_format({"type": "text"}) is None and output_format(None) is None
    obj = output_format({"type": "json_object"})
    assert obj.kind is FormatKind.JSON_OBJECT and "object ::=" in obj.gbnf
    raw = output_format(None, 'root ::= "yes" | "no"')
    assert raw.kind is FormatKind.GRAMMAR and raw.json_schema is None


@pytest.mark.parametrize("schema, named", [
    ({"type": "integer", "minimum": 0}, "'minimum'"),
    ({"type": "object", "properties": {"n": {"type": "number", "maximum": 5}}},
     "schema.properties.n: the keyword 'maximum'"),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "'uniqueItems'"),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "'oneOf'"),
    ({"allOf": [{"type": "string"}]}, "'allOf'"),
    ({"type": "string", "format": "email"}, "'email' is not enforced"),
    ({"type": "string", "pattern": "^a+$", "minLength": 2}, "'minLength'"),
    ({"type": "string", "pattern": "a+"}, "anchored with ^ and $"),
    ({"type": "object", "properties": {}, "required": ["x"]}, "'x', which is not in"),
    ({"type": "object", "patternProperties": {"^x": {}}}, "'patternProperties'"),
    ({"type": "thing"}, "'thing' is not a JSON type"),
    ({"$ref": "https://example.org/s.json"}, "own definitions"),
    ({"type": "object", "properties": {"a": True}}, "true/false schemas"),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 100000}, "maxItems"),
    ({"type": "object", "properties": {"a": {"$ref": "#/default"}},
      "default": {"type": "integer", "minimum": 5}}, "own definitions"),
    ({"$ref": "#/$defs/missing"}, "own definitions"),
    ({"type": "object", "properties": {"*": {"type": "integer"}}}, "may not be named '*'"),
    ({"type": "string", "enum": ["a", 1]}, "1 is not of the type 'string'"),
    ({"type": "integer", "const": True}, "is not of the type 'integer'"),
    ({"type": "string", "pattern": "^\\d{3}$"}, "backslash escapes"),
    ({"type": "string", "pattern": "^a.b$"}, "backslash escapes, '.'"),
    ({"type": "string", "pattern": "^[^x]+$"}, "negated classes"),
    ({"type": "array", "items": [{"type": "string"}]}, "write it as prefixItems"),
    ({"type": {}}, "wrong type"),
    ({"type": ["string", []]}, "wrong type"),
    ({"type": "string", "format": ["date"]}, "wrong type"),
    ({"type": "string", "pattern": "^*a$"}, "converter cannot"),
    ({"type": "string", "pattern": "^a{2,1}$"}, "response_format.json_schema"),
])
def test_a_keyword_the_grammar_does_not_enforce_is_refused_naming_it(schema, named):
    with pytest.raises(FormatError) as err:
        output_format(schema_format(schema))
    assert named in str(err.value) and str(err.value).startswith("response_format.json_schema")
    assert err.value.param == "response_format"
    assert failure_code(err.value) is FailureCode.INVALID_RESPONSE_FORMAT


@pytest.mark.parametrize("bad, named", [
    ({"type": "xml"}, "response_format.type"),
    ({"type": "json_schema"}, "needs a json_schema object"),
    ({"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}},
     "response_format.json_schema.name"),
    ({"type": "json_object", "json_schema": {"name": "x", "schema": {}}}, "type is"),
])
def test_a_malformed_response_format_is_refused(bad, named):
    with pytest.raises(FormatError) as err:
        output_format(bad)
    assert named in str(err.value)


def test_grammar_and_schema_together_or_empty_are_refused():
    with pytest.raises(FormatError, match="not both") as err:
        output_format({"type": "json_object"}, 'root ::= "x"')
    assert failure_code(err.value) is FailureCode.INVALID_GRAMMAR
    with pytest.raises(FormatError, match="non-empty"):
        output_format(None, "  ")


def test_pydantic_schemas_compile():
    """The shapes the openai SDK's parse() sends: $defs and $ref, anyOf for Optional, enums."""
    pydantic = pytest.importorskip("pydantic")
    from enum import Enum

    class Kind(str, Enum):
        A = "a"
        B = "b"

    class Author(pydantic.BaseModel):
        name: str
        orcid: str | None = None

    class Paper(pydantic.BaseModel):
        title: str
        kind: Kind
        authors: list[Author]
        year: int | None

    fmt = output_format(schema_format(Paper.model_json_schema(), "Paper"))
    assert "authors-item ::= def--" in fmt.gbnf  # the Author definition, renamed
    value = instance(fmt.json_schema, ["Deep", "thought"])
    assert check(fmt, json.dumps(value), "stop") == {"valid": True, "error": None}
    Paper.model_validate(value)


def test_answers_are_validated_and_a_cut_answer_is_never_valid():
    fmt = output_format(schema_format(CITY))
    good = '{"city": "Paris", "population": 2100000, "tags": ["capital"]}'
    assert check(fmt, good, "stop")["valid"]
    assert not check(fmt, good, "length")["valid"]
    assert "length" in check(fmt, good[:20], "length")["error"]
    wrong = check(fmt, '{"city": "Paris", "population": "many", "tags": []}', "stop")
    assert not wrong["valid"] and "population" in wrong["error"]
    assert "not JSON" in check(fmt, "Paris", "stop")["error"]


def test_the_echo_model_writes_schema_valid_json_and_max_tokens_cuts_it():
    engine = EchoEngine(ModelSpec(path="echo"))
    fmt = output_format(schema_format(CITY))
    msgs = [{"role": "user", "content": "Paris is big"}]
    done = engine.complete(GenRequest(messages=msgs, output=fmt))
    value = json.loads(done.text)
    assert value == {"city": "Paris", "population": 0, "tags": ["is"]}
    assert check(fmt, done.text, done.finish_reason)["valid"]
    cut = engine.complete(GenRequest(messages=msgs, output=fmt, max_tokens=2))
    assert cut.finish_reason == "length" and cut.completion_tokens == 2
    assert not check(fmt, cut.text, cut.finish_reason)["valid"]
    obj = engine.complete(GenRequest(messages=msgs, output=output_format(
        {"type": "json_object"})))
    assert json.loads(obj.text) == {"echo": "Paris is big"}


def test_the_echo_batch_refuses_a_raw_grammar_alone():
    engine = EchoEngine(ModelSpec(path="echo"))
    batched = EchoBatchedEngine(engine, 4)
    msgs = [{"role": "user", "content": "hi there"}]
    out = batched.generate([GenRequest(messages=msgs, output=output_format(None, 'root ::= "x"')),
                            GenRequest(messages=msgs)])
    assert isinstance(out[0], FormatError) and out[0].param == "grammar"
    assert out[1].text == "hi there"


def test_request_lines_take_a_format_and_refuse_a_bad_one_naming_it():
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
    line = {"custom_id": "q", "url": "/v1/chat/completions"}
    req = parse_request({**line, "body": {**body, "response_format": schema_format(CITY)}})
    assert req.options["response_format"]["json_schema"]["name"] == "city"
    assert parse_request({**line, "body": {**body, "response_format": {"type": "text"}}}
                         ).options == {"response_format": {"type": "text"}}
    with pytest.raises(RequestError) as err:
        parse_request({**line, "body": {**body, "response_format": schema_format(
            {"type": "integer", "minimum": 1})}})
    assert err.value.param == "body.response_format" and "'minimum'" in str(err.value)
    assert err.value.code == "invalid_response_format"
    req = parse_request({**line, "body": {**body, "grammar": 'root ::= "x"', "top_k": 5,
                                          "repeat_penalty": 1.2}})
    assert req.options == {"grammar": 'root ::= "x"', "top_k": 5, "repeat_penalty": 1.2}


@pytest.mark.parametrize("key, value", [
    ("frequency_penalty", 0.5), ("presence_penalty", 1),
    ("logit_bias", {"1": 5}), ("functions", [{"name": "f"}]),
    ("modalities", ["audio"]), ("reasoning_effort", "high"),
    ("best_of", 2), ("guided_json", {}),
])
def test_a_parameter_that_would_change_the_answer_is_refused_naming_it(key, value):
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], key: value}
    with pytest.raises(RequestError) as err:
        parse_request({"custom_id": "q", "url": "/v1/chat/completions", "body": body})
    assert err.value.param == f"body.{key}" and key in str(err.value)
    assert err.value.code == "unsupported_parameter"


def test_defaults_as_langchain_sends_them_are_accepted_and_listed():
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "n": 1,
            "logprobs": False, "frequency_penalty": 0, "presence_penalty": 0.0, "user": "u1",
            "stream": False, "functions": [], "parallel_tool_calls": True, "logit_bias": {}}
    req = parse_request({"custom_id": "q", "url": "/v1/chat/completions", "body": body})
    assert req.ignored == ["frequency_penalty", "functions", "logit_bias",
                           "parallel_tool_calls", "presence_penalty", "stream", "user"]
    assert "logprobs" not in req.options  # false: none asked for


@pytest.mark.parametrize("extra, options, param", [
    ({"logprobs": True}, {"logprobs": 0}, None),
    ({"logprobs": True, "top_logprobs": 5}, {"logprobs": 5}, None),
    ({"logprobs": "yes"}, None, "body.logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, None, "body.top_logprobs"),
    ({"top_logprobs": 3}, None, "body.top_logprobs"),
])
def test_logprobs_are_asked_for_as_openai_does(extra, options, param):
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], **extra}
    line = {"custom_id": "q", "url": "/v1/chat/completions", "body": body}
    if param is None:
        assert parse_request(line).options == options
    else:
        with pytest.raises(RequestError) as err:
            parse_request(line)
        assert err.value.param == param


def test_a_line_format_replaces_the_runs():
    run = {"response_format": {"type": "json_object"}, "seed": 1}
    assert line_over_run(run, {"grammar": "g"}) == {"seed": 1, "grammar": "g"}
    assert line_over_run(run, {"seed": 2}) == {"response_format": {"type": "json_object"},
                                               "seed": 2}


# ----------------------------------------------------------------------------- the CLI, echo

def test_ask_with_a_schema_file_prints_json_that_fits_it(tmp_path):
    from tests.helpers.cli import hpc

    (tmp_path / "city.json").write_text(json.dumps(CITY))
    out = hpc(tmp_path / "home", "ask", "Paris is lovely", "--agents", "balanced_agent",
              "--schema", str(tmp_path / "city.json"), "--raw")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"city": "Paris", "population": 0, "tags": ["is"]}
    full = hpc(tmp_path / "home", "ask", "Paris is lovely", "--agents", "balanced_agent",
               "--schema", str(tmp_path / "city.json"), "--json")
    record = json.loads(full.stdout)["responses"][0]["output_format"]
    assert record == {"kind": "json_schema", "name": "city", "valid": True, "error": None,
                      "sha256": output_format(schema_format(CITY)).sha256}


def test_a_schema_file_that_cannot_be_enforced_is_refused_before_any_work(tmp_path):
    from tests.helpers.cli import hpc

    bad = tmp_path / "bad.yaml"
    bad.write_text("type: object\nproperties:\n  n: {type: integer, exclusiveMinimum: 0}\n")
    out = hpc(tmp_path / "home", "ask", "hi", "--schema", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"--schema {bad}: schema.properties.n: the keyword 'exclusiveMinimum'" in \
        " ".join(out.stderr.split())
    missing = hpc(tmp_path / "home", "ask", "hi", "--schema", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "cannot read it" in missing.stderr


def test_an_extractor_agent_fixes_its_format_and_a_bad_one_names_the_file(tmp_path):
    from hpc_chat.agents.config import AgentConfig
    from hpc_chat.errors import ConfigError
    from tests.helpers.cli import hpc

    agent = {"name": "extractor", "config": {
        "model": "default", "temperature": 0.0, "system_prompt": "Extract.",
        "response_format": schema_format(CITY)}}
    (tmp_path / "extractor.yml").write_text(json.dumps(agent))
    workflow = tmp_path / "wf.yml"
    workflow.write_text(json.dumps({"name": "x", "config": {
        "executor": {"type": "local", "max_workers": 1},
        "agents": [{"name": "extractor", "config_file": str(tmp_path / "extractor.yml")}],
        "routing": {"default_agent": "extractor"}}}))
    out = hpc(tmp_path / "home", "ask", "Lima is far", "--raw", config=str(workflow))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["city"] == "Lima"
    agent["config"]["response_format"] = schema_format({"type": "string", "format": "email"})
    (tmp_path / "extractor.yml").write_text(json.dumps(agent))
    with pytest.raises(ConfigError) as err:
        AgentConfig.from_yaml(tmp_path / "extractor.yml")
    assert str(tmp_path / "extractor.yml") in str(err.value)
    assert "config.response_format" in str(err.value) and "'email'" in str(err.value)


# ----------------------------------------------------------------------------- tool calls

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                   "properties": {"city": {"type": "string", "maxLength": 30},
                                  "unit": {"enum": ["C", "F"]}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}


def test_tool_choice_required_named_auto_and_none():
    from hpc_chat.structured.tools import offered_tools, tools_prompt

    required = output_format(tools=[WEATHER, TIME], tool_choice="required")
    assert required.kind is FormatKind.TOOLS and not required.text_allowed
    assert [a["properties"]["name"]["const"] for a in required.json_schema["anyOf"]] == \
        ["get_weather", "get_time"]
    named = output_format(tools=[WEATHER, TIME],
                          tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.json_schema["properties"]["name"] == {"const": "get_time"}
    auto = output_format(tools=[WEATHER])
    assert auto.text_allowed and "root ::= tool-call | wrapped-call | answer-text" in auto.gbnf
    assert check(auto, "It is sunny.", "stop")["valid"]
    assert not check(auto, '{"name": "get_weather", "arguments": {}}', "stop")["valid"]
    assert output_format(tools=[WEATHER], tool_choice="none") is None
    assert offered_tools([WEATHER], "none") is None and offered_tools(None, "auto") is None
    assert offered_tools([WEATHER], "required") == [WEATHER]
    assert "get_weather: The weather in a city." in tools_prompt([WEATHER], optional=True)


@pytest.mark.parametrize("tools, choice, param, named", [
    ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "tool_choice", "'nope'"),
    ([WEATHER], "sometimes", "tool_choice", "tool_choice must be"),
    ([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}}}],
     "required", "tools", "tools[0].function.parameters.properties.n: the keyword 'minimum'"),
    ([{"type": "function"}], "auto", "tools", "tools[0].function"),
    ([WEATHER, WEATHER], "auto", "tools", "same name"),
    ([], "auto", "tools", "non-empty"),
])
def test_bad_tools_are_refused_naming_them(tools, choice, param, named):
    with pytest.raises(FormatError) as err:
        output_format(tools=tools, tool_choice=choice)
    assert err.value.param == param and named in str(err.value)
    assert failure_code(err.value) is FailureCode.INVALID_TOOLS
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "tools": tools,
            "tool_choice": choice}
    with pytest.raises(RequestError) as refused:
        parse_request({"custom_id": "q", "url": "/v1/chat/completions", "body": body})
    assert refused.value.param == f"body.{param}" and refused.value.code == "invalid_tools"


ROUND_TRIP = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "-3 C, snow"}]


def test_a_tool_round_trip_keeps_openais_turns():
    body = {"model": "a", "tools": [WEATHER], "messages": ROUND_TRIP}
    req = parse_request({"custom_id": "q", "url": "/v1/chat/completions", "body": body})
    assert req.history == [{"role": "user", "content": "Weather in Oslo?"}, {
        "role": "assistant", "content": "", "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}]
    assert req.prompt == "-3 C, snow"  # the result is the last message
    assert req.options["tool_result"] == {"tool_call_id": "call_1", "name": "get_weather"}
    assert req.options["tools"] == [WEATHER]


def test_without_tool_syntax_the_turns_become_text_and_the_tools_a_paragraph():
    from hpc_chat.structured.tools import as_text_turns
    from hpc_chat.worker.chat import build_messages

    req = parse_request({"custom_id": "q", "url": "/v1/chat/completions",
                         "body": {"model": "a", "tools": [WEATHER], "messages": ROUND_TRIP}})
    msgs = build_messages("Be brief.", req.prompt, req.history, req.options["tool_result"])
    assert msgs[-1] == {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
                        "content": "-3 C, snow"}
    turns = as_text_turns(msgs, [WEATHER], optional=False)
    assert all(set(t) == {"role", "content"} for t in turns)
    assert turns[0]["content"].startswith("Be brief.\n\nYou can call these functions:\n"
                                          "- get_weather: The weather in a city.")
    assert turns[2] == {"role": "assistant",
                        "content": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'}
    assert turns[3] == {"role": "user",
                        "content": "Result of the call call_1 to get_weather:\n-3 C, snow"}
    assert as_text_turns(msgs[:2], None, False) == msgs[:2]  # no tools: unchanged


def test_a_template_with_tool_syntax_writes_the_tools_calls_and_results_itself():
    from hpc_chat.llm.template import ChatTemplate
    from hpc_chat.worker.chat import build_messages
    from tests.helpers.templates import PLAIN_TEMPLATE, TOOL_TEMPLATE

    native = ChatTemplate(TOOL_TEMPLATE, eos_token="<|im_end|>", bos_token="")
    plain = ChatTemplate(PLAIN_TEMPLATE, eos_token="<|im_end|>", bos_token="")
    assert native.tool_syntax and not plain.tool_syntax
    req = parse_request({"custom_id": "q", "url": "/v1/chat/completions",
                         "body": {"model": "a", "tools": [WEATHER], "messages": ROUND_TRIP}})
    msgs = build_messages("Be brief.", req.prompt, req.history, req.options["tool_result"])
    prompt = native.prompt(msgs, [WEATHER])
    assert '<tools>{"type": "function", "function": {"name": "get_weather"' in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n' in prompt
    assert "<tool_response>\n-3 C, snow\n</tool_response>" in prompt
    assert "You can call these functions" not in prompt and "Result of the call" not in prompt
    text = plain.prompt(msgs, [WEATHER])
    assert "You can call these functions" in text and "<tool_response>" not in text
    assert "Result of the call call_1 to get_weather:\n-3 C, snow" in text
    assert "<tools>" not in native.prompt(msgs[:2])  # no tools offered: none listed


def test_a_call_becomes_openais_tool_calls():
    from hpc_chat.openai.chat import chat_completion

    prov = {"agents": [{"output_format": {"kind": "tools"}}]}
    call = chat_completion("a", {"response": '{"name": "get_weather", "arguments": '
                                             '{"city": "Oslo"}}', "finish_reason": "stop"},
                           0, prov)["choices"][0]
    assert call["finish_reason"] == "tool_calls" and call["message"]["content"] is None
    fn = call["message"]["tool_calls"][0]
    assert fn["id"].startswith("call_") and fn["type"] == "function"
    assert fn["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    text = chat_completion("a", {"response": "Sunny.", "finish_reason": "stop"}, 0,
                           prov)["choices"][0]
    assert text["finish_reason"] == "stop" and text["message"]["content"] == "Sunny."


def test_the_echo_model_makes_the_required_call():
    engine = EchoEngine(ModelSpec(path="echo"))
    fmt = output_format(tools=[WEATHER], tool_choice="required")
    done = engine.complete(GenRequest(messages=[{"role": "user", "content": "Oslo now"}],
                                      output=fmt))
    assert json.loads(done.text) == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert check(fmt, done.text, done.finish_reason)["valid"]


def test_a_definition_named_like_a_property_keeps_its_own_rule():
    """The converter names a definition's rule after its key and would reuse a property's rule
    of that name: definitions are renamed first, so x is still only "a" or "b"."""
    schema = {"type": "object", "required": ["code", "x"], "additionalProperties": False,
              "properties": {"code": {"type": "string", "maxLength": 10},
                             "x": {"$ref": "#/$defs/code"}},
              "$defs": {"code": {"enum": ["a", "b"]}}}
    fmt = output_format(schema_format(schema))
    rules = dict(line.split(" ::= ", 1) for line in fmt.gbnf.splitlines())
    assert rules["x"] != "code" and '"\\"a\\""' in rules[rules["x"]]
    assert fmt.json_schema == schema  # validated, and fingerprinted, as the request gave it
    named = {"type": "object", "required": ["definitions"], "additionalProperties": False,
             "properties": {"definitions": {"$ref": "#/$defs/word"}},
             "$defs": {"word": {"type": "string", "maxLength": 5}}}
    assert '"\\"definitions\\""' in output_format(schema_format(named)).gbnf


def test_a_validator_that_cannot_apply_the_schema_says_so_and_never_raises():
    from hpc_chat.protocol.output_format import OutputFormat

    odd = OutputFormat(kind=FormatKind.JSON_SCHEMA, gbnf="root ::= x", sha256="0" * 64,
                       json_schema={"type": "string", "pattern": "(unclosed"})
    verdict = check(odd, '"x"', "stop")
    assert verdict["valid"] is False and "could not check" in verdict["error"]


def test_several_named_agents_with_a_schema_are_refused(tmp_path):
    from tests.helpers.cli import hpc

    (tmp_path / "city.json").write_text(json.dumps(CITY))
    out = hpc(tmp_path / "home", "ask", "Paris", "--agents", "balanced_agent,creative_agent",
              "--schema", str(tmp_path / "city.json"))
    assert out.returncode == 1 and "gives one answer: name one agent" in out.stderr


def test_a_split_utf8_character_is_pending_until_its_last_byte():
    """A constrained draw after a token that ends mid-character lets the grammar see every
    token (hpc_chat.llm.sampling): the first-character shortcut needs whole characters."""
    from hpc_chat.llm.sampling import VocabIndex

    euro = "€".encode()  # three bytes
    assert VocabIndex.pending(b"") == b""
    assert VocabIndex.pending(b"abc") == b""
    assert VocabIndex.pending(b"a" + euro[:1]) == euro[:1]
    assert VocabIndex.pending(b"a" + euro[:2]) == euro[:2]
    assert VocabIndex.pending(b"a" + euro) == b""
    assert VocabIndex.pending("é".encode()[:1]) == "é".encode()[:1]


def test_tool_parameters_with_their_own_definitions_compile_apart():
    """Two tools whose parameters both define ``code`` (as pydantic models do): each call's
    ``$ref`` reaches its own tool's definition, in the grammar and in the check after."""
    import jsonschema

    from hpc_chat.structured.tools import tools_format

    def tool(name, key, code):
        return {"type": "function", "function": {"name": name, "parameters": {
            "type": "object", "required": [key], "properties": {key: {"$ref": "#/$defs/code"}},
            "$defs": {"code": code}}}}

    fmt = tools_format([tool("pick", "c", {"enum": ["a", "b"]}),
                        tool("count", "n", {"type": "integer"})], "required")
    assert '"\\"a\\"" | "\\"b\\""' in fmt.gbnf
    jsonschema.validate({"name": "pick", "arguments": {"c": "a"}}, fmt.json_schema)
    jsonschema.validate({"name": "count", "arguments": {"n": 3}}, fmt.json_schema)
    for wrong in ({"name": "count", "arguments": {"n": "a"}},
                  {"name": "pick", "arguments": {"c": 3}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, fmt.json_schema)


@pytest.mark.parametrize("grammar", ['root ::= <[1]> "x"', 'root ::= !<[64]> [a-z]+ "."',
                                     'root ::= "a" <|im_start|>'])
def test_a_grammar_with_token_elements_is_refused_naming_where(grammar):
    """llama.cpp matches token elements by id, and where a character rule meets one it can
    abort the engine: such a grammar is refused before anything is decoded."""
    with pytest.raises(FormatError, match="token elements") as refused:
        output_format(None, grammar)
    assert refused.value.param == "grammar"
    assert f"at character {grammar.index('<')}" in str(refused.value)


def test_angle_brackets_in_literals_classes_and_comments_are_text():
    fmt = output_format(None, 'root ::= "a<b" [<>] "\\"<" # <[1]>\n')
    assert fmt.kind is FormatKind.GRAMMAR


def test_auto_takes_a_call_wrapped_as_templates_with_tool_syntax_teach():
    from hpc_chat.structured.tools import parse_call

    auto = output_format(tools=[WEATHER])
    assert "root ::= tool-call | wrapped-call | answer-text" in auto.gbnf
    wrapped = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert parse_call(wrapped) == ("get_weather", {"city": "Oslo"})
    assert check(auto, wrapped, "stop")["valid"]
    bad = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'  # no city
    assert not check(auto, bad, "stop")["valid"] and parse_call("<b>bold</b>") is None


def test_a_template_that_drops_earlier_calls_has_no_tool_syntax():
    from hpc_chat.llm.template import ChatTemplate
    from tests.helpers.templates import TOOL_TEMPLATE

    no_calls = TOOL_TEMPLATE.replace("{{ call.function.arguments | tojson }}", "{}")
    assert not ChatTemplate(no_calls, eos_token="<|im_end|>", bos_token="").tool_syntax


def test_history_dropped_to_fit_takes_a_calls_results_with_it_and_counts_the_tools():
    from hpc_chat.errors import PromptTooLongError
    from hpc_chat.worker.chat import build_messages, stored_turn
    from hpc_chat.worker.fitting import fit_to_context

    req = parse_request({"custom_id": "q", "url": "/v1/chat/completions",
                         "body": {"model": "a", "tools": [WEATHER], "messages": [
                             *ROUND_TRIP, {"role": "assistant", "content": "Cold."},
                             {"role": "user", "content": "And Lima?"}]}})
    msgs = build_messages("Be brief.", req.prompt, req.history)

    def words(text):
        return len(text.split())

    budget = sum(words(m.get("content") or "") + 8 for m in [msgs[0], *msgs[-2:]]) + 12
    kept = fit_to_context(msgs, words, budget + 100, 100)  # room for the last turns only
    assert [m["role"] for m in kept] == ["system", "assistant", "user"]  # no orphan result
    with pytest.raises(PromptTooLongError):
        fit_to_context(msgs[:1] + msgs[-1:], words, 40, 10, extra_tokens=31)
    assert stored_turn("-3 C", {"tool_call_id": "c1", "name": "f"}) == \
        "Result of the call c1 to f:\n-3 C"
    assert stored_turn("hello", None) == "hello"
