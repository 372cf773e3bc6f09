"""Structured outputs with the real embedded model, which cannot write JSON unaided: every
answer here parses and fits its schema only because the grammar made it. Each schema bounds
its strings and arrays, so a complete answer is at most ~150 tokens and ``max_tokens=256``
always lets it finish: nothing here depends on how fast the machine is."""

from __future__ import annotations

import json

import jsonschema
import pytest

from hpc_chat.errors import FormatError
from hpc_chat.llm.batched import BatchedEngine
from hpc_chat.llm.models import ModelSpec, resolve_model
from hpc_chat.llm.registry import get_engine
from hpc_chat.protocol.request import GenRequest
from hpc_chat.structured.compile import output_format
from hpc_chat.structured.tools import parse_call
from tests.helpers.templates import TOOL_TEMPLATE

pytestmark = pytest.mark.model

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def city_schema(field: str = "city") -> dict:
    return {"type": "object", "additionalProperties": False,
            "required": [field, "population", "tags"],
            "properties": {field: {"type": "string", "maxLength": 40},
                           "population": {"type": "integer"},
                           "tags": {"type": "array", "minItems": 1, "maxItems": 3,
                                    "items": {"type": "string", "maxLength": 20}}}}


def fmt_of(schema: dict, name: str = "city") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                                                   "strict": True}}


def ask(text: str, schema: dict | None = None, **kw) -> GenRequest:
    return GenRequest(messages=[SYSTEM, {"role": "user", "content": text}],
                      output=output_format(fmt_of(schema)) if schema else None,
                      **{"temperature": 0.0, "max_tokens": 256, **kw})


@pytest.fixture(scope="module")
def engine():
    return get_engine(ModelSpec(path=str(resolve_model("default")), n_threads=2))[0]


def alone(engine, req: GenRequest):
    return engine.chat(req.messages, temperature=req.temperature, max_tokens=req.max_tokens,
                       seed=req.seed, top_p=req.top_p, top_k=req.top_k,
                       repeat_penalty=req.repeat_penalty, output=req.output)


def test_unaided_the_model_writes_no_json_and_constrained_it_fits_the_schema(engine):
    schema = city_schema()
    free = alone(engine, ask("Describe Paris as JSON with city, population and tags."))
    with pytest.raises((ValueError, jsonschema.ValidationError)):
        jsonschema.validate(json.loads(free.text), schema)
    done = alone(engine, ask("Describe Paris as JSON with city, population and tags.",
                             schema))
    assert done.finish_reason == "stop"
    jsonschema.validate(json.loads(done.text), schema)


def test_eight_schemas_in_one_batch_each_fit_and_equal_their_answer_alone(engine):
    """Eight requests, each with a schema of its own (another required key), and two without
    one, decoded in one continuous batch: every constrained answer fits its own schema, and
    every answer is the one the unbatched engine gives the same request."""
    cities = ["Paris", "Tokyo", "Lima", "Cairo", "Oslo", "Delhi", "Quito", "Perth"]
    reqs = [ask(f"Describe {c}.", city_schema(f"name_{i}")) for i, c in enumerate(cities)]
    reqs[3:3] = [ask("Name a colour.", max_tokens=16)]
    reqs.append(ask("Name a planet.", max_tokens=16))
    batched = BatchedEngine(engine, n_seq=8)
    together = batched.generate(reqs)
    for req, got in zip(reqs, together):
        assert not isinstance(got, Exception), got
        if req.output is not None:
            assert got.finish_reason == "stop", got.text
            jsonschema.validate(json.loads(got.text), req.output.json_schema)
    assert [c.text for c in together] == [alone(engine, r).text for r in reqs]
    # one schema, parsed once per engine: eight schemas, eight parses, however many requests
    before = batched.grammars.parsed
    again = batched.generate([ask(f"Describe {c}.", city_schema("name_0")) for c in cities[:4]])
    assert batched.grammars.parsed == before
    assert [json.loads(c.text) for c in again]


def test_sampled_answers_with_a_schema_equal_their_answer_alone(engine):
    """At temperature 0.7 with seeds, the batched engine checks the grammar on a shortlist or
    on the tokens whose first character it allows, not on the whole vocabulary
    (hpc_chat.llm.sampling): both shortcuts are taken here, and every answer is still the one
    the unbatched engine draws with the grammar on every token, and fits its schema."""
    cities = ["Paris", "Tokyo", "Lima", "Cairo", "Oslo", "Delhi"]
    reqs = [ask(f"Describe {c}.", city_schema(), temperature=0.7, seed=11 + i)
            for i, c in enumerate(cities)]
    batched = BatchedEngine(engine, n_seq=8)
    together = batched.generate(reqs)
    for got in together:
        assert not isinstance(got, Exception), got
        assert got.finish_reason == "stop", got.text
        jsonschema.validate(json.loads(got.text), city_schema())
    steps = batched.profile.grammar_steps
    assert steps["shortlist"] > 0 and steps["first_character"] > 0, steps
    assert [c.text for c in together] == [alone(engine, r).text for r in reqs]


def test_a_grammar_llama_cpp_cannot_parse_fails_that_request_alone(engine):
    bad = GenRequest(messages=[SYSTEM, {"role": "user", "content": "Yes or no?"}],
                     output=output_format(None, "root ::= ( \"yes\" "), max_tokens=8)
    good = GenRequest(messages=[SYSTEM, {"role": "user", "content": "Yes or no?"}],
                      output=output_format(None, 'root ::= "yes" | "no"'), max_tokens=8,
                      temperature=0.0)
    # a grammar that parses but allows no character after "yes" (and no end): where llama.cpp
    # would abort the engine on accepting a token anyway, that request fails alone
    dead = GenRequest(messages=[SYSTEM, {"role": "user", "content": "Yes or no?"}],
                      output=output_format(None, r'root ::= "yes" [^\x00-\U0010FFFF]'),
                      max_tokens=8, temperature=0.0)
    out = BatchedEngine(engine, n_seq=3).generate([bad, good, dead])
    assert isinstance(out[0], FormatError) and out[0].param == "grammar"
    assert out[1].text in ("yes", "no")
    assert isinstance(out[2], FormatError) and out[2].param == "grammar"
    assert "allows no token" in str(out[2])
    with pytest.raises(FormatError):
        alone(engine, bad)


# ----------------------------------------------------------------------------- through serve

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.helpers.server import real_model_server

    yield from real_model_server(tmp_path_factory)


def test_the_sdks_parse_with_a_pydantic_model(server):
    """``chat.completions.parse(response_format=Model)``: the SDK sends the model's strict
    schema, and the answer parses into the model; provenance says it validated."""
    import pydantic

    class City(pydantic.BaseModel):
        city: str = pydantic.Field(max_length=40)
        population: int
        tags: list[str] = pydantic.Field(min_length=1, max_length=3)

    done = server.client().chat.completions.parse(
        model="analytical_agent", response_format=City, max_tokens=256, seed=1,
        messages=[{"role": "user", "content": "Describe Paris."}])
    city = done.choices[0].message.parsed
    assert isinstance(city, City) and city.city
    record = done.model_extra["hpc_chat"]["agents"][0]["output_format"]
    assert record["kind"] == "json_schema" and record["name"] == "City"
    assert record["valid"] is True and len(record["sha256"]) == 64


def test_chat_logprobs_through_the_sdk_whole_and_streamed(server):
    """``logprobs: true, top_logprobs: 2`` in OpenAI's shape: a token per generated token;
    streamed, they come with the finish chunk. The provenance is unchanged by them."""
    ask = dict(model="balanced_agent", max_tokens=12, seed=5, temperature=0.0, logprobs=True,
               top_logprobs=2, messages=[{"role": "user", "content": "Name a planet."}])
    done = server.client().chat.completions.create(**ask)
    content = done.choices[0].logprobs.content
    assert len(content) == done.usage.completion_tokens
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
    assert "".join(t.token for t in content).strip() == done.choices[0].message.content
    assert "logprobs" not in done.model_extra["hpc_chat"]["agents"][0]["sampling"]
    plain = server.client().chat.completions.create(**{**ask, "logprobs": False,
                                                       "top_logprobs": None})
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == done.choices[0].message.content
    chunks = list(server.client().chat.completions.create(**ask, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]


def test_a_text_completion_continues_the_prompt_without_the_chat_template(server):
    """``/v1/completions`` on the real model: the prompt alone is decoded (fewer prompt tokens
    than the same text as a chat message, which has the template and the system prompt), the
    continuation keeps its leading space, and its tokens' logprobs spell it."""
    client = server.client()
    prompt = "The capital of France is"
    done = client.completions.create(model="balanced_agent", prompt=prompt, max_tokens=6,
                                      temperature=0.0, logprobs=2, seed=1)
    text = done.choices[0].text
    assert text.strip() and text[0].isspace(), text
    assert "".join(done.choices[0].logprobs.tokens) == text
    assert all(len(t) == 2 for t in done.choices[0].logprobs.top_logprobs)
    chat = client.chat.completions.create(model="balanced_agent", max_tokens=6, seed=1,
                                          messages=[{"role": "user", "content": prompt}])
    assert done.usage.prompt_tokens < chat.usage.prompt_tokens - 5
    # Streamed, the pieces keep the leading space and join into the same continuation.
    pieces = [c.choices[0].text for c in client.completions.create(
        model="balanced_agent", prompt=prompt, max_tokens=6, temperature=0.0, seed=1,
        stream=True, stream_options={"include_usage": True}) if c.choices]
    assert "".join(pieces) == text


def test_streamed_deltas_join_into_the_json(server):
    schema = city_schema()
    pieces = [c.choices[0].delta.content or "" for c in server.client().chat.completions.create(
        model="balanced_agent", stream=True, max_tokens=256, seed=2,
        response_format=fmt_of(schema),
        messages=[{"role": "user", "content": "Describe Tokyo."}]) if c.choices]
    assert len([p for p in pieces if p]) > 3
    jsonschema.validate(json.loads("".join(pieces)), schema)


def test_eight_concurrent_requests_each_get_their_own_schema(server):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        schema = city_schema(f"field_{i}")
        done = server.client().chat.completions.create(
            model="analytical_agent", max_tokens=256, seed=i, response_format=fmt_of(schema),
            messages=[{"role": "user", "content": f"Describe city number {i}."}])
        return schema, done

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    for schema, done in answers:
        assert done.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(done.choices[0].message.content), schema)


def test_a_schema_that_cannot_be_enforced_and_tools_are_refused_naming_them(server):
    import openai

    client = server.client()
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="balanced_agent", messages=msgs,
                                       response_format=fmt_of({"type": "integer",
                                                               "minimum": 0}))
    assert err.value.param == "response_format" and "'minimum'" in err.value.message
    assert err.value.code == "invalid_response_format"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="balanced_agent", messages=msgs,
                                       logit_bias={"1": 5})
    assert err.value.param == "logit_bias" and err.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="balanced_agent", messages=msgs, extra_body={
            "grammar": "root ::= ("})
    assert err.value.param == "grammar" and err.value.code == "invalid_grammar"


def test_a_raw_grammar_as_llama_server_takes_it(server):
    done = server.client().chat.completions.create(
        model="balanced_agent", max_tokens=8, messages=[
            {"role": "user", "content": "Is the sky blue? Answer yes or no."}],
        extra_body={"grammar": 'root ::= "yes" | "no"'})
    assert done.choices[0].message.content in ("yes", "no")


def test_ignore_eos_as_llama_server_takes_it(server):
    """A benchmark's equal lengths: the answer runs to max_tokens; with a format it is
    refused, naming the key."""
    import openai

    client = server.client()
    msgs = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    done = client.chat.completions.create(model="balanced_agent", max_tokens=40, seed=3,
                                          messages=msgs, extra_body={"ignore_eos": True})
    assert done.usage.completion_tokens == 40 and done.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="balanced_agent", messages=msgs,
                                       response_format={"type": "json_object"},
                                       extra_body={"ignore_eos": True})
    assert err.value.param == "ignore_eos" and "response_format" in err.value.message


# ----------------------------------------------------------------------------- batch files

@pytest.mark.parsl
def test_a_batch_of_schema_lines_validates_line_by_line(tmp_path, fixtures):
    """An OpenAI batch file through ``hpc-chat batch`` on the real model: every schema line's
    answer validates, a line whose schema cannot be enforced gets its own error entry naming
    the keyword, and the rest of the batch runs. Native lines take ``--schema FILE``."""
    from tests.helpers.cli import hpc

    fast = str(fixtures / "workflows" / "fast.yml")
    schema = city_schema()
    lines = [json.dumps({"custom_id": f"c{i}", "method": "POST",
                         "url": "/v1/chat/completions",
                         "body": {"model": "analytical_agent", "max_tokens": 256, "seed": i,
                                  "response_format": fmt_of(schema),
                                  "messages": [{"role": "user", "content": f"Describe {c}."}]}})
             for i, c in enumerate(["Paris", "Lima", "Oslo"])]
    lines.append(json.dumps({"custom_id": "bad", "method": "POST",
                             "url": "/v1/chat/completions",
                             "body": {"model": "analytical_agent",
                                      "response_format": fmt_of({"type": "number",
                                                                 "multipleOf": 2}),
                                      "messages": [{"role": "user", "content": "x"}]}}))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    home = tmp_path / "home"
    run = hpc(home, "batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
              config=fast, model=None, timeout=900)
    assert run.returncode == 1, run.stderr  # one line failed
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(o["custom_id"] for o in out) == ["c0", "c1", "c2"]
    for o in out:
        body = o["response"]["body"]
        jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), schema)
        assert body["hpc_chat"]["agents"][0]["output_format"]["valid"] is True
    errors = [json.loads(x) for x in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert [e["custom_id"] for e in errors] == ["bad"]
    error = errors[0]["response"]["body"]["error"]
    assert errors[0]["response"]["status_code"] == 400 and "'multipleOf'" in error["message"]
    assert error["param"] == "body.response_format"

    (tmp_path / "schema.json").write_text(json.dumps(schema))
    (tmp_path / "native.jsonl").write_text('{"id": 1, "prompt": "Describe Rome."}\n')
    native = hpc(home, "batch", str(tmp_path / "native.jsonl"), "-o",
                 str(tmp_path / "native.out.jsonl"), "--schema", str(tmp_path / "schema.json"),
                 "--max-tokens", "256", "--agents", "analytical_agent", config=fast,
                 model=None, timeout=900)
    assert native.returncode == 0, native.stderr
    line = json.loads((tmp_path / "native.out.jsonl").read_text())
    jsonschema.validate(json.loads(line["response"]), schema)


# ----------------------------------------------------------------------------- tool calls

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 30},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}}}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a time zone.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["zone"],
                   "properties": {"zone": {"type": "string", "maxLength": 30}}}}}


def test_named_and_required_tool_calls_fit_their_parameters(server):
    client = server.client()
    ask_weather = [{"role": "user", "content": "What is the weather in Oslo?"}]
    named = client.chat.completions.create(
        model="analytical_agent", messages=ask_weather, tools=[WEATHER, TIME], max_tokens=128,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = named.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments),
                        WEATHER["function"]["parameters"])
    required = client.chat.completions.create(
        model="analytical_agent", tools=[WEATHER, TIME], tool_choice="required",
        max_tokens=128, messages=[{"role": "user", "content": "What time is it in Tokyo?"}])
    call = required.choices[0].message.tool_calls[0]
    assert call.function.name in ("get_weather", "get_time")
    params = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), params["function"]["parameters"])


def test_a_tool_result_goes_back_and_the_model_answers(server):
    """The whole round trip, as an agent framework drives it: the model calls, the client runs
    the tool, sends its result with the call's id, and the model answers in text."""
    client = server.client()
    msgs = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = client.chat.completions.create(
        model="analytical_agent", messages=msgs, tools=[WEATHER], tool_choice="required",
        max_tokens=128)
    call = first.choices[0].message.tool_calls[0]
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "-3 degrees and snow"}]
    final = client.chat.completions.create(
        model="analytical_agent", messages=msgs, tools=[WEATHER], tool_choice="none",
        max_tokens=48, seed=4)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    decoded = final.model_extra["hpc_chat"]["agents"][0]["messages"]
    assert decoded[-1] == {"role": "tool", "tool_call_id": call.id, "name": "get_weather",
                           "content": "-3 degrees and snow"}
    assert decoded[-2]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_a_template_with_tool_syntax_reads_the_round_trip_batched_as_alone(engine):
    """A GGUF whose template has tool syntax (Qwen 2.5's, Hermes') is given the tools, the
    call and its result as they are; the answer is still held to a call, and the batched
    engine makes the same prompt and answer as the unbatched one."""
    original = engine.llama.metadata["tokenizer.chat_template"]
    engine.use_template(TOOL_TEMPLATE)
    try:
        msgs = [SYSTEM, {"role": "user", "content": "What is the weather in Oslo and Lima?"},
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
                 "content": "-3 degrees and snow"}]
        req = GenRequest(messages=msgs, tools=[WEATHER], temperature=0.0, max_tokens=64,
                         output=output_format(tools=[WEATHER], tool_choice="required"))
        tokens, _ = engine.prompt_tokens(msgs, [WEATHER])
        # Under 256 cells with the answer: past that, flash attention may sum a lone
        # sequence's cells in another order than a batch's (docs/performance.md).
        assert len(tokens) + req.max_tokens <= 256
        prompt = engine.llama.detokenize(tokens, special=True).decode()
        assert '<tools>{"type": "function", "function": {"name": "get_weather"' in prompt
        assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}' in prompt
        assert "<tool_response>\n-3 degrees and snow\n</tool_response>" in prompt
        assert "You can call these functions" not in prompt
        one = engine.complete(req)
        together = BatchedEngine(engine, n_seq=2).generate([req, ask("Name a colour.",
                                                                     max_tokens=16)])
        assert together[0].text == one.text and one.prompt_tokens == len(tokens)
        call = parse_call(one.text)
        assert call is not None, one.text
        name, arguments = call
        assert name == "get_weather"
        jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    finally:
        engine.use_template(original)


def test_a_streamed_tool_call_comes_as_one_tool_calls_delta(server):
    chunks = list(server.client().chat.completions.create(
        model="balanced_agent", stream=True, tools=[WEATHER], tool_choice="required",
        max_tokens=128, messages=[{"role": "user", "content": "Weather in Lima?"}]))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [d.tool_calls for d in deltas if d.tool_calls]
    assert len(calls) == 1 and calls[0][0].function.name == "get_weather"
    json.loads(calls[0][0].function.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not any(d.content for d in deltas)


def test_auto_answers_in_text_or_a_call_the_same_batched_as_alone(engine):
    """tool_choice auto: llama.cpp parses the grammar (a call, a call wrapped in
    <tool_call>, or text), and whatever the model chose fits it."""
    from hpc_chat.structured.validate import check

    fmt = output_format(tools=[WEATHER])
    req = GenRequest(messages=[SYSTEM, {"role": "user", "content": "Weather in Oslo?"}],
                     tools=[WEATHER], output=fmt, temperature=0.0, max_tokens=96)
    one = engine.complete(req)
    assert BatchedEngine(engine, n_seq=2).generate([req])[0].text == one.text
    assert one.text and one.text.lstrip()[0] not in "<{" or parse_call(one.text), one.text
    if one.finish_reason == "stop":
        assert check(fmt, one.text, one.finish_reason)["valid"], one.text
