"""The node engine with real processes: one engine for every worker of a pool, answers equal to
unbatched decoding, an engine killed mid-batch, a client that goes away, a manager that ends."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from multiprocessing.connection import Client

import pytest

from hpc_chat.driver.workflow import ParslChatWorkflow
from hpc_chat.llm.models import ModelSpec
from hpc_chat.protocol.engine import (
    Done,
    Failed,
    FailKind,
    Op,
    Order,
    Stops,
    Text,
    encode,
    read_event,
)
from hpc_chat.protocol.request import GenRequest
from tests.helpers.engines import listening_engines, status_at
from tests.helpers.procs import processes_of_home


def _run_batch(fixtures, tmp_path, prompts: list[str], *, model=None, agents=None,
               workflow="batched.yml"):
    from hpc_chat.batch.input import read_batch
    from hpc_chat.batch.output import OutputWriter
    from hpc_chat.batch.run import answer_with_workflow

    path = tmp_path / "prompts.txt"
    path.write_text("".join(p + "\n" for p in prompts))
    out = tmp_path / "out.jsonl"
    results = []

    class Writer(OutputWriter):
        def write(self, item, result, *, finished_at):
            line = super().write(item, result, finished_at=finished_at)
            results.append(result)
            return line

    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"), model=model)
        await wf.initialize(str(fixtures / "workflows" / workflow))
        writer = Writer(out, resume=False)
        try:
            failed = await answer_with_workflow(wf, read_batch(path), writer, agents=agents,
                                      options={"max_tokens": 24})
            return failed, await wf.get_parsl_stats()
        finally:
            writer.close()
            await wf.shutdown()

    failed, stats = asyncio.run(asyncio.wait_for(go(), 300))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    return failed, stats, lines, results


@pytest.mark.model
@pytest.mark.parsl
def test_one_engine_decodes_every_workers_requests_as_unbatched_decoding_would(fixtures,
                                                                                tmp_path):
    """Two workers, micro-batches of two, a fan-out to two agents: every answer comes from the
    one engine of the pool, which loaded the model once, and each answer is the text the
    unbatched engine gives for the recorded messages and sampling (seed included)."""
    from hpc_chat.llm.registry import get_engine

    workflow = tmp_path / "wf.yml"
    workflow.write_text((fixtures / "workflows" / "batched.yml").read_text()
                        .replace("batch_size: 8", "batch_size: 2"))
    prompts = [f"Give one word that rhymes with number {i}." for i in range(6)]
    failed, _, lines, results = _run_batch(fixtures, tmp_path, prompts,
                                           agents=["creative_agent", "analytical_agent"],
                                           workflow=str(workflow))
    assert failed == 0 and len(lines) == 6
    responses = [r for res in results for r in res["responses"]]
    assert len(responses) == 12
    engines = {r["engine"]["pid"] for r in responses}
    workers = {r["worker"]["pid"] for r in responses}
    assert len(engines) == 1, engines
    assert len(workers) == 2, "both workers should have carried tasks"
    assert sum(r["timings"]["model_loaded_now"] for r in responses) == 1
    assert all(r["batched"] for r in responses)
    engine, _ = get_engine(ModelSpec(path=responses[0]["model_path"]))
    for r in responses:
        prov = r["provenance"]
        alone = engine.complete(GenRequest(messages=prov["messages"], **prov["sampling"]))
        assert alone.text == r["content"], (r["agent"], prov["messages"][-1])


@pytest.mark.model
@pytest.mark.parsl
def test_engine_killed_mid_batch_its_requests_are_retried_on_a_fresh_engine(fixtures,
                                                                            tmp_path):
    """SIGKILL the engine as soon as it holds requests (each answer lasts 2 s at the echo
    pace, whatever the machine's speed): their tasks fail with the engine's loss, Parsl retries
    them, a new engine answers them, and every prompt is answered exactly once."""
    killed = []
    stop = threading.Event()

    def kill_engine_in_flight():
        home = os.environ["HPC_CHAT_HOME"]
        while not stop.is_set() and not killed:
            for pid, cmdline in processes_of_home(home).items():
                if "hpc_chat.worker.node_engine" not in cmdline:
                    continue
                sock = cmdline.split("--socket ")[1].split()[0]
                try:
                    busy = status_at(sock)["in_flight"] > 0
                except OSError:
                    continue  # still loading
                if busy:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_engine_in_flight, daemon=True)
    killer.start()
    prompts = [f"Say something about the number {i}." for i in range(12)]
    try:
        failed, stats, lines, results = _run_batch(
            fixtures, tmp_path, prompts, model="echo?tokens=20&token_s=0.1")
    finally:
        stop.set()
        killer.join()
    assert killed and failed == 0
    answered = Counter(x["id"] for x in lines if x["ok"])
    assert sorted(answered) == list(range(1, 13)) and set(answered.values()) == {1}
    engines = {r["responses"][0]["engine"]["pid"] for r in results}
    assert killed[0] not in engines, "an answer came from the killed engine"
    assert stats["retried_tasks"] >= 1


# ------------------------------------------------------------------ one engine process, directly
def _start_engine(tmp_path, manager: int, slots: int = 1, model="echo?token_s=0.05"):
    sock = tmp_path / "engine.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpc_chat.worker.node_engine", "--socket", str(sock),
         "--spec", ModelSpec(path=model).model_dump_json(), "--slots", str(slots),
         "--manager", str(manager)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the engine did not start"
        time.sleep(0.05)
    return proc, sock


def _request(sock, max_tokens: int, message="one two three"):
    """A decode order sent as any client would (the protocol's own types)."""
    conn = Client(str(sock), family="AF_UNIX")
    conn.send_bytes(encode(Order(op=Op.DECODE, request=GenRequest(
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": message}],
        max_tokens=max_tokens))))
    return conn


def _answer(conn) -> Done:
    event = read_event(conn.recv_bytes())
    assert isinstance(event, Done), event
    return event


def test_an_order_that_is_not_the_protocols_is_refused_and_the_engine_serves_on(tmp_path):
    """A message the engine's protocol does not declare gets one ``failed`` event of kind
    ``input`` (no prompt text quoted back), and the next order is answered as usual."""
    proc, sock = _start_engine(tmp_path, os.getpid())
    try:
        for bad in (b'{"op": "decode", "request": {"messages": "secret words"}}',
                    b'{"op": "launch"}', b"not json", b'{"op": "decode"}'):
            with Client(str(sock), family="AF_UNIX") as conn:
                conn.send_bytes(bad)
                event = read_event(conn.recv_bytes())
            assert isinstance(event, Failed) and event.kind is FailKind.INPUT, (bad, event)
            assert "secret" not in event.error
        assert _answer(_request(sock, 3, "four five six")).completion.text == "four five six"
    finally:
        proc.kill()
        proc.wait()


def test_a_client_that_goes_away_frees_its_slot(tmp_path):
    """One slot; the first request would decode for about 17 minutes (2000 tokens at 0.5 s).
    Its client closes the connection: the slot is freed, and the next request is answered."""
    proc, sock = _start_engine(tmp_path, os.getpid(), slots=1,
                               model="echo?tokens=2000&token_s=0.5")
    try:
        endless = _request(sock, 2000)
        deadline = time.monotonic() + 60
        while status_at(sock)["in_flight"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        endless.close()
        second = _request(sock, 3, "four five six")
        assert second.poll(120), "the freed slot never took the next request"
        reply = _answer(second)
        assert reply.completion.text == "four five six"
        assert reply.engine.pid == proc.pid
        status = status_at(sock)
        assert status["in_flight"] == 0 and status["served"] == 1
    finally:
        proc.kill()
        proc.wait()


def _order(rid: int, max_tokens: int, message: str, stream: bool = False) -> bytes:
    return encode(Order(op=Op.DECODE, rid=rid, stream=stream, request=GenRequest(
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": message}],
        max_tokens=max_tokens)))


def _events_until_ended(conn, rids: set[int], timeout: float = 120) -> dict[int, list]:
    """Each request's events, read until every one of ``rids`` has its ``done``/``failed``."""
    events: dict[int, list] = {}
    open_ = set(rids)
    while open_:
        assert conn.poll(timeout), f"requests {sorted(open_)} never ended"
        event = read_event(conn.recv_bytes())
        events.setdefault(event.rid, []).append(event)
        if isinstance(event, (Done, Failed)):
            open_.discard(event.rid)
    return events


NINE = "a b c d e f g h i j k l"


def test_one_connection_carries_a_tasks_requests_and_a_cancel_stops_only_its_own(tmp_path):
    """A task's requests share one connection, each with its own rid; their events come back
    tagged with it, streamed text included. Two slots: an endless answer (2000 tokens at
    0.25 s) and a streamed short one run; the third (12 tokens) waits for a slot. Cancelling
    the endless one by its rid ends it alone, frees its slot for the third, and every other
    answer is whole. Closing the connection then cancels what it still holds."""
    proc, sock = _start_engine(tmp_path, os.getpid(), slots=2,
                               model="echo?tokens=2000&token_s=0.25")
    try:
        with Client(str(sock), family="AF_UNIX") as conn:
            conn.send_bytes(_order(7, 2000, "endless"))
            conn.send_bytes(_order(8, 3, "one two three", stream=True))
            conn.send_bytes(_order(9, 12, NINE))  # 3 s: still running when 8 has ended
            first = _events_until_ended(conn, {8})
            assert isinstance(first[8][0], Stops)
            streamed = "".join(e.t for e in first[8] if isinstance(e, Text))
            assert first[8][-1].completion.text == "one two three"
            assert streamed and "one two three".startswith(streamed), streamed
            assert 7 not in first and status_at(sock)["in_flight"] == 2  # 7 and 9
            conn.send_bytes(encode(Order(op=Op.CANCEL, rid=7)))
            rest = _events_until_ended(conn, {7, 9})
            assert rest[7][-1].completion.finish_reason == "cancelled"
            assert rest[9][-1].completion.text == NINE
            assert all(isinstance(e, Done) for e in rest[9])  # not streamed: the outcome only
            conn.send_bytes(_order(10, 2000, "endless again"))
            deadline = time.monotonic() + 60
            while status_at(sock)["in_flight"] != 1:
                assert time.monotonic() < deadline, "the engine never counted request 10"
                time.sleep(0.05)
        deadline = time.monotonic() + 60  # the connection closed: request 10 is cancelled
        while (status := status_at(sock))["in_flight"] != 0:
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert status["served"] == 3  # 7 (cut), 8 and 9; 10 was heard by no one
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.model
def test_the_status_counts_the_engines_decode_calls_passes_and_tokens(tmp_path):
    """What the benchmark reads of a node engine: two requests with ``ignore_eos`` (sent over
    the wire as any worker sends them) generate exactly max_tokens each, every token but the
    last of each decoded in a call of the engine, in one pass over the weights per call."""
    from hpc_chat.llm.models import resolve_model

    proc, sock = _start_engine(tmp_path, os.getpid(), slots=2, model=str(resolve_model("default")))
    try:
        before = status_at(sock)
        conns = []
        for message in ("Name a colour.", "Name a fruit."):
            conn = Client(str(sock), family="AF_UNIX")
            conn.send_bytes(encode(Order(op=Op.DECODE, request=GenRequest(
                messages=[{"role": "user", "content": message}], max_tokens=12,
                temperature=0.0, ignore_eos=True))))
            conns.append(conn)
        answers = [_answer(conn).completion for conn in conns]
        after = status_at(sock)
    finally:
        proc.kill()
        proc.wait()
    assert [a.completion_tokens for a in answers] == [12, 12]
    assert before["steps"] == before["generated"] == 0
    assert after["generated"] == 2 * 11  # the last token drawn is never decoded
    assert 12 <= after["steps"] <= 24 and after["passes"] == after["steps"]  # one run of ids


@pytest.mark.model
def test_the_sites_prompt_cache_bound_sizes_the_engines_holders(tmp_path, monkeypatch):
    """``model.prefix_cache_mb`` reaches the engine a worker starts: 0 keeps no holder; 64 MiB
    keeps the floor of 3 (one holder of the embedded model at 2048 cells takes about 45 MiB);
    the default 1024 MiB keeps more. Each bound is an engine of its own."""
    from hpc_chat.llm.models import resolve_model
    from hpc_chat.protocol.context import SiteModel
    from hpc_chat.worker import engine_client
    from hpc_chat.worker.node_engine import process_start

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    manager = subprocess.Popen(["sleep", "600"])
    spec = ModelSpec(path=str(resolve_model("default")), n_threads=2)
    holders, paths, pids = {}, set(), []
    try:
        for mb in (0, 64, 1024):
            engine = engine_client.settings(SiteModel(engine_slots=2, prefix_cache_mb=mb))
            paths.add(engine_client.engine_path(spec, engine, manager.pid))
            with engine_client.connect(spec, engine, manager=manager.pid) as conn:
                conn.send_bytes(encode(Order(op=Op.STATUS)))
                status = json.loads(conn.recv_bytes())
            holders[mb], pids = status["holders"], [*pids, status["pid"]]
    finally:
        manager.kill()
        manager.wait()
    for pid in pids:  # each ends with its manager (a zombie of this process: ended)
        deadline = time.monotonic() + 60
        while process_start(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_start(pid) is None
    assert len(paths) == 3
    assert holders[0] == 0 and holders[64] == 3 and holders[1024] > 3, holders


def test_the_engine_ends_with_the_worker_pools_manager(tmp_path):
    """The engine outlives the worker that started it (workers come and go), not the manager."""
    manager = subprocess.Popen(["sleep", "600"])
    proc, sock = _start_engine(tmp_path, manager.pid)
    try:
        assert proc.poll() is None
        manager.kill()
        manager.wait()
        assert proc.wait(timeout=30) == 0
        assert not sock.exists() and not list(tmp_path.glob("engine.*"))
    finally:
        for p in (manager, proc):
            if p.poll() is None:
                p.kill()


@pytest.mark.parsl
def test_a_task_timeout_lands_while_the_engine_decodes_and_frees_the_slot(fixtures, tmp_path):
    """An answer of 20 s at the echo pace against performance.timeout_seconds: 2. The task
    keeps its own limit while it waits for its engine (hpc_chat.worker.time_limit): at 2 s it
    fails, its connection is closed and the engine stops that answer (nothing left in flight),
    instead of a task hung in a C wait."""
    workflow = tmp_path / "wf.yml"
    workflow.write_text((fixtures / "workflows" / "fast.yml").read_text()
                        .replace("timeout_seconds: 60", "timeout_seconds: 2"))

    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"),
                               model="echo?tokens=400&token_s=0.05")
        await wf.initialize(str(workflow))
        try:
            result = await wf.process_request("alpha beta", agents=["balanced_agent"],
                                              options={"max_tokens": 400})
            engines = [cmd for cmd in processes_of_home(os.environ["HPC_CHAT_HOME"]).values()
                       if "hpc_chat.worker.node_engine" in cmd]
            deadline = time.monotonic() + 60
            while engines:
                sock = engines[0].split("--socket ")[1].split()[0]
                if status_at(sock)["in_flight"] == 0:
                    break
                assert time.monotonic() < deadline, "the timed-out answer kept its slot"
                await asyncio.sleep(0.2)
            return result, engines
        finally:
            await wf.shutdown()

    result, engines = asyncio.run(asyncio.wait_for(go(), 300))
    assert not result["ok"] and "timed out" in result["error"], result
    assert engines, "no node engine ran the request"


@pytest.mark.model
def test_the_decode_loop_waits_on_when_every_request_it_took_was_cancelled():
    """An open feed whose only waiting request was cancelled (its worker died): the loop tells
    it and waits for the next request, which it answers (it used to end, as if closed)."""
    from hpc_chat.llm.batched import BatchedEngine
    from hpc_chat.llm.feed import Feed, Job
    from hpc_chat.llm.models import resolve_model
    from hpc_chat.llm.registry import get_engine
    from hpc_chat.protocol.request import Completion, GenRequest

    engine, _ = get_engine(ModelSpec(path=str(resolve_model("default"))))
    batched = BatchedEngine(engine, 1)
    request = GenRequest(messages=[{"role": "user", "content": "Say hi."}], max_tokens=4,
                         temperature=0.0)
    told, answered = [], threading.Event()
    gone = Job(request, told.append)
    gone.cancelled.set()
    feed = Feed([gone])
    loop = threading.Thread(target=batched.run, args=(feed,), daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while not told:  # the loop has taken the cancelled request, and nothing else
            assert time.monotonic() < deadline
            time.sleep(0.01)
        outcome = []
        feed.put(Job(request, lambda o: (outcome.append(o), answered.set())))
        assert answered.wait(120), "the loop ended with the feed still open"
        assert len(told) == 1 and "cancelled" in str(told[0])
        assert isinstance(outcome[0], Completion) and outcome[0].completion_tokens >= 1
    finally:
        feed.close()
        loop.join(60)
        batched.close()
    assert not loop.is_alive()


@pytest.mark.parsl
def test_an_answer_done_early_is_not_held_for_its_micro_batch(fixtures, tmp_path):
    """Four requests submitted in one go share one Parsl task (one micro-batch): three answers
    of 2 tokens and one of 12, at 0.25 s a token. With a stream of this process (as the
    server and the live panels open), each short answer is delivered when the engine finishes
    it (~0.5 s), not when the long one ends (~3 s); the task's own result, later, changes
    nothing. Without a stream the short answers wait for their task."""
    from hpc_chat.driver.result_streams import stream_addresses
    from hpc_chat.driver.token_hub import TokenHub

    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"),
                               model="echo?tokens=12&token_s=0.25")
        await wf.initialize(str(fixtures / "workflows" / "batched.yml"))
        hub = TokenHub()
        await hub.start(*stream_addresses(wf))
        try:
            await wf.process_request("warm up", agents=["balanced_agent"])

            async def round_(streams: bool) -> tuple[list[float], list[dict], int]:
                before = wf.batcher.tasks_sent
                start = time.monotonic()
                tasks = [wf.submit_request(f"{'s' if streams else 'h'}{i}",
                                           agents=["balanced_agent"],
                                           options={"max_tokens": 2 if i < 3 else 12},
                                           stream=hub.open(tokens=False)[1] if streams
                                           else None) for i in range(4)]
                ends: list[float] = [0.0] * 4
                for i, t in enumerate(tasks):
                    t.add_done_callback(lambda _, i=i: ends.__setitem__(
                        i, time.monotonic() - start))
                results = await asyncio.gather(*tasks)
                return ends, results, wf.batcher.tasks_sent - before

            early = await round_(streams=True)
            held = await round_(streams=False)
            return early, held
        finally:
            await hub.stop()
            await wf.shutdown()

    (ends, results, tasks), (held_ends, _, held_tasks) = asyncio.run(
        asyncio.wait_for(go(), 300))
    assert tasks == 1 and held_tasks == 1  # one micro-batch each time
    assert [r["response"] for r in results] == ["s0 s0", "s1 s1", "s2 s2",
                                                " ".join(["s3"] * 12)]
    assert all(r["ok"] for r in results)
    assert max(ends[:3]) < ends[3] - 1.5, ends  # 10 tokens (2.5 s) before the long answer
    assert min(held_ends[:3]) > held_ends[3] - 0.5, held_ends  # held for the task's end


def test_an_engine_whose_socket_is_removed_stops_and_the_next_client_starts_another(
        tmp_path, monkeypatch):
    """The socket file deleted under a serving engine (a /tmp cleaner, an rm): the engine,
    which nobody can reach any more, stops itself, and a client that was about to wait for it
    starts a fresh engine at the same path instead of waiting for ever."""
    from hpc_chat.worker import engine_client

    proc, sock = _start_engine(tmp_path, os.getpid())
    new = None
    try:
        old = status_at(sock)["pid"]
        sock.unlink()
        monkeypatch.setattr(os, "getppid", os.getpid)  # the test is the new engine's manager
        engine_client.start(sock, ModelSpec(path="echo?token_s=0.05"), {"slots": 1})
        assert proc.wait(timeout=30) == 4  # it ended itself: its socket was gone
        status = status_at(sock)
        new = status["pid"]
        assert new != old and status["in_flight"] == 0
        reply = _request(sock, 3, "still answered")
        assert reply.poll(60) and _answer(reply).completion.text == "still answered"
    finally:
        if new:
            os.kill(new, signal.SIGTERM)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parsl
def test_the_pool_loads_its_node_engine_before_any_task(fixtures, tmp_path):
    """The workers' launch line starts the agents' node engine with the pool
    (:mod:`hpc_chat.worker.pool_start`): it listens while no task has been sent, it is the
    engine the first answer comes from, and it is the only one."""
    async def go():
        wf = ParslChatWorkflow(history_path=str(tmp_path / "h.db"), model="echo?tokens=3")
        await wf.initialize(str(fixtures / "workflows" / "batched.yml"))
        try:
            run = wf.executor.dfk.run_dir  # this run's pools and engines, not a last test's
            before = await asyncio.to_thread(listening_engines, os.environ["HPC_CHAT_HOME"], 1,
                                             run_dir=run)
            sent = wf.executor.dfk.task_count
            result = await wf.process_request("hello", agents=["balanced_agent"])
            after = await asyncio.to_thread(listening_engines, os.environ["HPC_CHAT_HOME"], 1,
                                            run_dir=run)
            return before, sent, result, after
        finally:
            await wf.shutdown()

    before, sent, result, after = asyncio.run(asyncio.wait_for(go(), 300))
    assert sent == 0
    assert len(before) == 1 and before[0]["served"] == 0
    answer = result["responses"][0]
    assert answer["content"] == "hello hello hello"
    assert answer["engine"]["pid"] == before[0]["pid"]
    assert [e["pid"] for e in after] == [before[0]["pid"]] and after[0]["served"] == 1
