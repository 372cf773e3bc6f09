"""The seed's examples against real Parsl (HighThroughputExecutor, LocalProvider) and the model."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from hpc_chat.driver.workflow import ParslChatWorkflow, create_parsl_chat_workflow
from tests.helpers.procs import parsl_processes, wait_gone

pytestmark = [pytest.mark.model, pytest.mark.parsl]


@pytest.fixture(scope="module")
def fast_config(fixtures) -> str:
    return str(fixtures / "workflows" / "fast.yml")


@pytest.fixture(scope="module")
def workflow(loop, fast_config):
    wf = loop.run_until_complete(create_parsl_chat_workflow(fast_config))
    yield wf
    loop.run_until_complete(wf.shutdown())


def test_wait_for_workers_reports_the_connected_pool(loop, workflow):
    assert loop.run_until_complete(workflow.wait_for_workers(2, timeout=60)) == 2


def test_basic_usage(loop, workflow):
    """The seed's Basic Usage example."""
    response = loop.run_until_complete(
        workflow.process_user_input("Explain the concept of distributed computing"))
    assert isinstance(response, str) and len(response.split()) >= 3


def test_batch_processing(loop, workflow):
    """The seed's Batch Processing example: submit all, then await each."""
    messages = ["What is machine learning?", "Explain quantum computing",
                "How does blockchain work?", "What are neural networks?",
                "Describe cloud computing"]

    async def go():
        futures = [workflow.submit_message(m) for m in messages]
        return [await f for f in futures]

    results = loop.run_until_complete(go())
    assert len(results) == 5
    assert all(isinstance(r, str) and r.strip() for r in results)


def test_performance_monitoring(loop, workflow):
    """The seed's Performance Monitoring example, with the numbers checked."""
    before = loop.run_until_complete(workflow.get_performance_stats())["total_requests"]
    for i in range(10):
        loop.run_until_complete(workflow.process_user_input(f"Test message {i}"))
    stats = loop.run_until_complete(workflow.get_performance_stats())
    assert stats["total_requests"] == before + 10
    assert stats["successful_requests"] == stats["total_requests"]
    assert stats["failed_requests"] == 0
    assert 0 < stats["min_response_time"] <= stats["avg_response_time"] <= \
        stats["max_response_time"]
    assert stats["throughput"] > 0 and stats["tokens_per_s"] > 0
    assert stats["model_loads"] == 1  # one engine for the node, whichever worker asked
    parsl_stats = loop.run_until_complete(workflow.get_parsl_stats())
    assert parsl_stats["active_workers"] == 2
    assert parsl_stats["pending_tasks"] == 0
    assert parsl_stats["completed_tasks"] >= 10
    assert parsl_stats["blocks"] == 1


def test_requests_overlap_on_two_workers(fast_config, tmp_path):
    """Parallelism is real: two agent tasks run at the same time in different processes.
    Each answer takes 2 s (the echo model), however fast the machine."""
    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"),
                               model="echo?tokens=20&token_s=0.1")
        await wf.initialize(fast_config)
        try:
            await wf.wait_for_workers(2, timeout=60)
            a = wf.submit_request("Describe a forest.", agents=["balanced_agent"])
            b = wf.submit_request("Describe an ocean.", agents=["balanced_agent"])
            return await a, await b
        finally:
            await wf.shutdown()

    ra, rb = asyncio.run(go())
    ta, tb = ra["responses"][0], rb["responses"][0]
    assert ta["worker"]["pid"] != tb["worker"]["pid"]
    start = max(ta["timings"]["start"], tb["timings"]["start"])
    end = min(ta["timings"]["end"], tb["timings"]["end"])
    assert start < end, "the two tasks did not overlap in time"


def test_routing_sends_to_several_agents_and_aggregates(loop, workflow):
    result = loop.run_until_complete(workflow.process_request(
        "Imagine a story, then explain and compare it."))
    assert result["ok"]
    assert set(result["agents"]) == {"creative_agent", "analytical_agent"}
    assert "[creative_agent]" in result["response"] and "[analytical_agent]" in result["response"]
    assert len(result["responses"]) == 2


def test_repeat_request_is_served_from_cache(loop, workflow):
    async def ask():
        return await workflow.process_request("Imagine a lighthouse.")

    first = loop.run_until_complete(ask())
    done_before = loop.run_until_complete(workflow.get_parsl_stats())["completed_tasks"]
    second = loop.run_until_complete(ask())
    done_after = loop.run_until_complete(workflow.get_parsl_stats())["completed_tasks"]
    assert not first["cached"] and second["cached"]
    assert second["response"] == first["response"]
    assert done_after == done_before  # no task was sent to a worker


def test_unknown_agent_and_empty_prompt_fail_cleanly(loop, workflow):
    bad = loop.run_until_complete(workflow.process_request("hi", agents=["nobody"]))
    assert not bad["ok"] and "unknown agent(s) nobody" in bad["error"]
    empty = loop.run_until_complete(workflow.process_request("   "))
    assert not empty["ok"] and "empty" in empty["error"]


def test_everything_sent_to_workers_serializes(workflow):
    """What crosses to a worker is plain data plus an importable function."""
    from parsl.serialize import deserialize, serialize

    from hpc_chat.worker.chat import process_chat_message
    from hpc_chat.worker.tasks import chat_task

    agent = workflow.agents["creative_agent"].config.to_dict()
    context = {"history": [{"role": "user", "content": "hi"}], "options": {"seed": 1},
               "model": workflow.site_model.model_dump()}
    for obj in (agent, context, "message"):
        assert deserialize(serialize(obj)) == obj
    assert pickle.loads(pickle.dumps(chat_task)) is chat_task
    result = process_chat_message(workflow.agents["analytical_agent"].config.to_dict(),
                                  "Explain rain.", {"options": {"max_tokens": 4}})
    assert deserialize(serialize(result)) == result


def test_conversation_history_reaches_agents(loop, workflow):
    async def go():
        await workflow.process_user_input("My name is Ada.", conversation_id="t-hist")
        return await workflow.submit_request("What is my name?", conversation_id="t-hist")

    result = loop.run_until_complete(go())
    answer = result["responses"][0]
    assert answer["history_turns_used"] == 2
    stored = loop.run_until_complete(workflow.history.messages("t-hist"))[1]
    system = workflow.agents[answer["agent"]].config.config.system_prompt
    # put back by the driver, not sent back; the stored answer names its agents (one chunk)
    assert answer["provenance"]["messages"] == [
        {"role": "system", "content": system}, {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": stored["content"], "agent": stored["agent"]},
        {"role": "user", "content": "What is my name?"}]
    msgs = loop.run_until_complete(workflow.history.messages("t-hist"))
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]


def test_shutdown_leaves_no_process_behind(fast_config, tmp_path):
    before = parsl_processes()

    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"))
        await wf.initialize(fast_config)
        reply = await wf.process_user_input("Hello")
        started = parsl_processes() - before
        await wf.shutdown()
        return reply, started

    reply, started = asyncio.run(go())
    assert reply
    assert started, "expected an interchange and a worker pool to have been running"
    assert wait_gone(started) == set()


def test_two_workflows_in_one_process(fast_config, tmp_path):
    async def go():
        a = ParslChatWorkflow(history_path=str(tmp_path / "a.db"))
        b = ParslChatWorkflow(history_path=str(tmp_path / "b.db"))
        await a.initialize(fast_config)
        await b.initialize(fast_config)
        try:
            ra, rb = await asyncio.gather(a.process_user_input("Hello from A"),
                                          b.process_user_input("Hello from B"))
            return ra, rb, a.executor.dfk is not b.executor.dfk
        finally:
            await a.shutdown()
            await b.shutdown()

    ra, rb, separate = asyncio.run(go())
    assert ra and rb and separate


def test_persistent_history_survives_a_new_workflow(fast_config, tmp_path):
    db = str(tmp_path / "persist.db")

    async def first():
        async with ParslChatWorkflow(history_path=db, executor=_local()) as wf:
            await wf.process_user_input("Remember the word teal.", conversation_id="p",
                                        options={"max_tokens": 8})

    async def second():
        async with ParslChatWorkflow(history_path=db, executor=_local()) as wf:
            return await wf.history.messages("p")

    asyncio.run(first())
    msgs = asyncio.run(second())
    assert [m["content"] for m in msgs][0] == "Remember the word teal."
    assert len(msgs) == 2


def _local():
    from hpc_chat.driver.executors.base import ExecutorConfig
    from hpc_chat.driver.executors.local import LocalExecutor

    return LocalExecutor(ExecutorConfig(executor_type="local", max_workers=1))


def test_timeout_fails_one_request_and_the_rest_go_on(tmp_path, fixtures):
    """A 5 s limit; the slow answer is 100 tokens of 0.1 s (the echo model): 10 s."""
    cfg = (fixtures / "workflows" / "fast.yml").read_text()
    cfg = cfg.replace("timeout_seconds: 60", "timeout_seconds: 5").replace(
        "max_tokens: 24", "max_tokens: 100")
    path = tmp_path / "slow.yml"
    path.write_text(cfg)

    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"),
                               model="echo?tokens=100&token_s=0.1")
        await wf.initialize(str(path))
        try:
            # Load the model in both workers first: a cold first load is not what is tested.
            await asyncio.gather(*(wf.process_request(f"Hi {i}", agents=["balanced_agent"],
                                                      options={"max_tokens": 1})
                                   for i in range(2)))
            slow = await wf.process_request("Count from 1 to 1000, one number per line.",
                                            agents=["analytical_agent"])
            quick = await wf.process_request("Hi", agents=["balanced_agent"],
                                             options={"max_tokens": 1})
            return slow, quick
        finally:
            await wf.shutdown()

    slow, quick = asyncio.run(go())
    assert not slow["ok"] and "timed out" in slow["error"]
    assert 5 <= slow["latency_s"] < 60
    assert quick["ok"], quick["error"]
