"""Batched decoding: same answers as unbatched decoding, continuous batching, and the workflow
grouping requests to one agent into one worker task."""

from __future__ import annotations

import asyncio

import pytest

from hpc_chat.driver.workflow import ParslChatWorkflow
from hpc_chat.errors import PromptTooLongError
from hpc_chat.llm.batched import BatchedEngine
from hpc_chat.llm.models import ModelSpec, resolve_model
from hpc_chat.llm.registry import get_engine
from hpc_chat.protocol.request import GenRequest

pytestmark = pytest.mark.model

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def requests(n, **kw):
    return [GenRequest(messages=[SYSTEM, {"role": "user",
                                          "content": f"Tell me one fact about the number {i}."}],
                       **{"temperature": 0.0, "max_tokens": 32, **kw}) for i in range(n)]


@pytest.fixture(scope="module")
def engine():
    return get_engine(ModelSpec(path=str(resolve_model("default")), n_threads=2))[0]


def unbatched(engine, reqs):
    return [engine.chat(r.messages, temperature=r.temperature, max_tokens=r.max_tokens,
                        seed=r.seed, top_p=r.top_p, top_k=r.top_k,
                        repeat_penalty=r.repeat_penalty) for r in reqs]


def test_greedy_output_is_identical_to_unbatched_decoding(engine):
    """Same chat template, tokens, sampler chain and stop rules as the high-level path."""
    reqs = requests(6)
    single = unbatched(engine, reqs)
    alone = BatchedEngine(engine, n_seq=1).generate(reqs)
    assert [c.text for c in alone] == [c.text for c in single]
    assert [c.prompt_tokens for c in alone] == [c.prompt_tokens for c in single]
    assert [c.completion_tokens for c in alone] == [c.completion_tokens for c in single]


def test_eight_at_once_are_well_formed_and_identical_to_unbatched_decoding(engine):
    """Eight sequences in one decode give each request the answer it gets alone: the batch
    is ordered by sequence id (one micro-batch), and flash attention sums each sequence's own
    cache cells in the same order either way."""
    reqs = requests(8)
    single = unbatched(engine, reqs)
    together = BatchedEngine(engine, n_seq=8).generate(reqs)
    for c in together:
        assert c.text and 0 < c.completion_tokens <= 32 and c.finish_reason in ("stop", "length")
        assert c.extra["batched"]
    assert [c.text for c in together] == [c.text for c in single]


def test_logprobs_are_the_models_own_and_change_nothing_of_the_answer(engine):
    """Each generated token's log-probability from its row of logits, with its likeliest
    alternatives: at temperature 0 without penalties the token drawn is the likeliest, the
    tokens spell the answer, and asking for them leaves the answers as they were."""
    plain = requests(3, repeat_penalty=1.0)
    asked = [r.model_copy(update={"logprobs": 3}) for r in plain]
    together = BatchedEngine(engine, n_seq=3).generate(plain + asked)
    for without, with_ in zip(together[:3], together[3:]):
        assert with_.text == without.text and "logprobs" not in without.extra
        content = with_.extra["logprobs"]
        assert len(content) == with_.completion_tokens
        assert "".join(t["token"] for t in content).strip() == with_.text
        for t in content:
            assert t["logprob"] <= 0.0 and len(t["top_logprobs"]) == 3
            assert t["top_logprobs"][0]["token"] == t["token"]  # greedy: the likeliest
            assert t["top_logprobs"][0]["logprob"] == t["logprob"]
            assert bytes(t["bytes"]).decode("utf-8", "replace") == t["token"]


def test_logprobs_end_where_a_stop_string_cuts_the_answer(engine):
    [free] = BatchedEngine(engine, n_seq=1).generate(requests(1, repeat_penalty=1.0,
                                                             logprobs=1))
    words = free.text.split()
    assert len(words) > 3, free.text
    stop = words[2]  # the answer is cut before its third word
    [cut] = BatchedEngine(engine, n_seq=1).generate(requests(1, repeat_penalty=1.0, logprobs=1,
                                                            stop=[stop]))
    tokens = "".join(t["token"] for t in cut.extra["logprobs"])
    assert cut.finish_reason == "stop" and tokens.strip().startswith(cut.text)
    assert len(tokens.strip()) < len(cut.text) + len(stop)  # nothing listed past the cut


def test_a_shared_system_prompt_is_evaluated_once_per_worker(engine):
    """The system prompt's cache is copied into every request's sequence, not re-evaluated,
    and stays in its holder for the next batch."""
    batched = BatchedEngine(engine, n_seq=4)
    first = batched.generate(requests(6, max_tokens=8))
    again = batched.generate(requests(2, max_tokens=8))
    assert batched.prefix.fills == 1
    assert all(c.extra["shared_prompt_tokens"] > 5 for c in first + again)
    assert [c.text for c in again] == [c.text for c in first[:2]]


def test_more_system_prompts_than_holders_give_the_unbatched_answers(engine):
    """Four agents' prompts through three holders: holders are evicted and refilled while
    other sequences still decode, and every answer matches its unbatched one."""
    personas = ["You are a poet.", "You are a physicist.", "You are a chef.",
                "You are a historian."]
    reqs = [GenRequest(messages=[{"role": "system", "content": personas[i % 4]},
                                 {"role": "user", "content": f"Describe the number {i}."}],
                       temperature=0.0, max_tokens=16) for i in range(8)]
    batched = BatchedEngine(engine, n_seq=2, holders=3)
    out = batched.generate(reqs)
    assert batched.prefix.fills >= 5  # 4 prompts, and at least one came back after eviction
    assert [c.text for c in out] == [c.text for c in unbatched(engine, reqs)]


def test_continuous_batching_serves_more_requests_than_sequences(engine):
    reqs = requests(10, max_tokens=12, temperature=0.8, seed=5)
    out = BatchedEngine(engine, n_seq=3).generate(reqs)
    assert len(out) == 10 and all(c.text and c.completion_tokens <= 12 for c in out)
    again = BatchedEngine(engine, n_seq=3).generate(reqs)
    assert [c.text for c in again] == [c.text for c in out]  # seeded: reproducible
    # and the same draws as one request at a time: same logits, same sampler chain and seed
    assert [c.text for c in out] == [c.text for c in unbatched(engine, reqs)]


def test_stop_strings_and_a_too_long_prompt_fail_only_their_slot(engine):
    long = GenRequest(messages=[{"role": "user", "content": "word " * 3000}], max_tokens=16)
    counting = GenRequest(messages=[{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6"}],
                          temperature=0.0, max_tokens=40, stop=["7"])
    out = BatchedEngine(engine, n_seq=4).generate([long, counting])
    assert isinstance(out[0], PromptTooLongError)
    assert "7" not in out[1].text


def test_workflow_sends_requests_to_one_agent_as_one_task(fixtures, tmp_path):
    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"))
        await wf.initialize(str(fixtures / "workflows" / "batched.yml"))
        try:
            results = await asyncio.gather(*(
                wf.process_request(f"Name a planet, number {i}.", agents=["balanced_agent"])
                for i in range(8)))
            bad = await wf.process_request("word " * 3000, agents=["balanced_agent"])
            return results, bad, await wf.get_parsl_stats(), wf.batcher.tasks_sent
        finally:
            await wf.shutdown()

    results, bad, stats, tasks_sent = asyncio.run(go())
    assert all(r["ok"] for r in results), [r["error"] for r in results]
    assert all(r["responses"][0]["batched"] for r in results)
    assert tasks_sent == 2 and stats["completed_tasks"] == 2  # 8 requests in 1 task, + 1
    assert not bad["ok"] and "context window" in bad["error"]



def test_each_turn_of_a_conversation_starts_from_the_previous_answers_cache(engine):
    """Three conversations of four turns, each request with its whole history: a turn finds
    the previous prompt and its answer in a holder (kept when the answer ended) and evaluates
    only the header between that answer and the new message. Every answer is the unbatched
    one, whose engine, answering the conversations in turn, evaluates each history from
    scratch, its earlier answers one token per call as they were generated."""
    questions = [["Name a planet.", "How big is it?", "Who found it?", "Tell me more."],
                 ["Name a fruit.", "What colour is it?", "Where does it grow?", "And?"],
                 ["Name a river.", "How long is it?", "Which sea does it reach?", "Why?"]]
    conversations = [[SYSTEM] for _ in questions]
    batched = BatchedEngine(engine, n_seq=2, holders=4)
    before: list = []
    for turn in range(4):
        reqs = []
        for history, asked in zip(conversations, questions):
            history.append({"role": "user", "content": asked[turn]})
            reqs.append(GenRequest(messages=list(history), temperature=0.7, seed=turn,
                                   max_tokens=48))
        evaluated = batched.profile.prefix_tokens
        out = batched.generate(reqs)
        assert [c.text for c in out] == [c.text for c in unbatched(engine, reqs)]
        assert batched.prefix.answers == 3 * (turn + 1)
        if turn:  # the previous prompt and (nearly) all its answer found, not evaluated
            for c, earlier in zip(out, before):
                assert c.extra["cached_prompt_tokens"] > earlier.prompt_tokens
            assert batched.profile.prefix_tokens - evaluated <= 3 * 8  # headers, a token more
            answered = sum(c.completion_tokens for c in before)
            assert answered > 3 * 8
        before = out
        for history, c in zip(conversations, out):
            history.append({"role": "assistant", "content": c.text})


def test_an_answer_sent_back_is_cut_per_token_and_a_stored_one_is_one_chunk(engine):
    """An OpenAI client's earlier answer is cut after each token (the cache its answer left
    holds it so); the workflow's stored answer names its agents and stays one chunk (it may
    join several answers, and the window of turns moves), through the worker's messages."""
    from hpc_chat.structured.tools import as_text_turns
    from hpc_chat.worker.chat import build_messages

    answer = "Mars is the fourth planet from the Sun."
    sent = build_messages("Be brief.", "How big is it?", [
        {"role": "user", "content": "Name a planet."}, {"role": "assistant", "content": answer}])
    stored = build_messages("Be brief.", "How big is it?", [
        {"role": "user", "content": "Name a planet."},
        {"role": "assistant", "content": answer, "agent": "a,b", "completion_tokens": 9}])
    assert stored[2] == {"role": "assistant", "content": answer, "agent": "a,b"}
    assert as_text_turns(stored, None, False)[2]["agent"] == "a,b"
    tokens, per_token = engine.prompt_chunks(sent)
    same, whole = engine.prompt_chunks(stored)
    assert same == tokens  # the name is not rendered: the same prompt
    answered = len(engine.llama.tokenize(answer.encode(), add_bos=False))
    assert len(whole) == 3 and len(per_token) == 3 + answered
    assert set(whole) < set(per_token)
    first = engine.chat(sent[:2], temperature=0.0, max_tokens=8)  # the unbatched engine
    again = engine.chat(sent[:2] + [{"role": "assistant", "content": first.text},
                                    {"role": "user", "content": "Why?"}], max_tokens=4)
    assert again.extra["cached_prompt_tokens"] > first.prompt_tokens  # and some of the answer
    engine.answers_stepwise = False  # a model on a GPU: an answer is one chunk there
    try:
        assert engine.prompt_chunks(sent)[1] == whole
    finally:
        engine.answers_stepwise = True


def test_a_finished_sequence_below_running_ones_is_filled_by_the_highest(engine):
    """Answers of 32, 4, 16 and 8 tokens: each time a sequence ends below running ones, the
    highest running one moves down into its place, so every step stays one run of consecutive
    ids (one pass over the weights) and the answers are still the unbatched ones."""
    reqs = [r.model_copy(update={"max_tokens": m, "repeat_penalty": 1.0})
            for r, m in zip(requests(4), (32, 4, 16, 8))]
    batched = BatchedEngine(engine, n_seq=4)
    out = batched.generate(reqs)
    assert [c.completion_tokens for c in out] == [32, 4, 16, 8]
    # the 4 ends at id 1: the 8 moves from 3 to 1; the 8 ends there: the 16 moves from 2 to 1
    assert batched.profile.moves == 2
    assert batched.profile.runs == batched.profile.steps  # no step split by a gap
    assert [c.text for c in out] == [c.text for c in unbatched(engine, reqs)]


def test_answers_past_256_tokens_are_the_unbatched_ones(engine):
    """Past 256 cache cells flash attention may take its split-KV path for a lone sequence;
    two long answers decoded together, one going on alone after the other ends, are still the
    answers each gets alone."""
    prompts = ["Write a long story about a dragon who learns to bake bread.",
               "Explain in great detail how a steam engine works, step by step."]
    reqs = [GenRequest(messages=[SYSTEM, {"role": "user", "content": p}], temperature=0.0,
                       max_tokens=m, repeat_penalty=1.0) for p, m in zip(prompts, (260, 300))]
    out = BatchedEngine(engine, n_seq=2).generate(reqs)
    assert max(c.completion_tokens for c in out) > 256
    assert [c.text for c in out] == [c.text for c in unbatched(engine, reqs)]


def test_the_batch_never_holds_more_than_its_cap_and_answers_stay_the_same(engine):
    """A context of 16 sequences whose cap (:mod:`hpc_chat.llm.slots`) is held at 3: ten
    requests never decode more than 3 at a time, and each answer is the unbatched one."""
    batched = BatchedEngine(engine, n_seq=16)
    assert batched.slots.cap == 8  # a context of 16 starts at 8 and grows only if it pays
    batched.slots.cap, batched.slots.settled = 3, True
    reqs = requests(10, max_tokens=12)
    out = batched.generate(reqs)
    assert max(batched.profile.generation) == 3
    assert [c.text for c in out] == [c.text for c in unbatched(engine, reqs)]


def test_a_strong_repeat_penalty_sampled_at_temperature_gives_the_unbatched_answers(engine):
    """The batched engine applies the repeat penalty to the last 64 tokens itself
    (:class:`~hpc_chat.llm.sampling.ChainSampler`), not with llama.cpp's sampler over the whole
    vocabulary: the same draws, seeded and greedy, past 64 tokens (the window slides)."""
    reqs = [r.model_copy(update={"seed": 11 + i, "temperature": 0.8 if i % 2 else 0.0})
            for i, r in enumerate(requests(4, max_tokens=96, repeat_penalty=1.5))]
    out = BatchedEngine(engine, n_seq=4).generate(reqs)
    assert any(c.completion_tokens > 64 for c in out)
    assert [c.text for c in out] == [c.text for c in unbatched(engine, reqs)]


def test_ignore_eos_runs_every_answer_to_max_tokens_alone_and_batched(engine):
    """llama-server's ``ignore_eos`` (the benchmark's equal lengths): the end-of-generation
    tokens are never drawn, so greedy answers that stop early without it run to max_tokens,
    batched as unbatched, token for token."""
    free = requests(4, max_tokens=96)
    natural = BatchedEngine(engine, n_seq=4).generate(free)
    assert any(c.finish_reason == "stop" for c in natural)  # the option has work to do
    reqs = requests(4, max_tokens=96, ignore_eos=True)
    single = [engine.chat(r.messages, temperature=0.0, max_tokens=96, ignore_eos=True)
              for r in reqs]
    together = BatchedEngine(engine, n_seq=4).generate(reqs)
    assert [c.completion_tokens for c in together] == [96] * 4
    assert [c.finish_reason for c in together] == ["length"] * 4
    assert [c.text for c in together] == [c.text for c in single]
    assert [c.completion_tokens for c in single] == [96] * 4
    sampled = requests(4, max_tokens=64, ignore_eos=True, temperature=0.7, seed=11)
    alone = [engine.chat(r.messages, temperature=0.7, seed=11, max_tokens=64, ignore_eos=True)
             for r in sampled]
    batched = BatchedEngine(engine, n_seq=4).generate(sampled)
    assert [c.text for c in batched] == [c.text for c in alone]
    assert [c.completion_tokens for c in batched] == [64] * 4


def test_ignore_eos_is_refused_with_a_format_or_logprobs():
    from pydantic import ValidationError

    from hpc_chat.structured.compile import output_format

    fmt = output_format(response_format={"type": "json_object"})
    for extra in ({"output": fmt}, {"logprobs": 0}):
        with pytest.raises(ValidationError, match="ignore_eos cannot be combined"):
            GenRequest(messages=[SYSTEM], ignore_eos=True, **extra)
