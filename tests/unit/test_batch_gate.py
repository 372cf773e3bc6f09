"""The Batch API's window and retry rules against a stand-in workflow (the seam the runner
calls: ``submit_request``, ``get_parsl_stats``, settings): interactive requests shrink the
window, nothing is sent while no model is loaded, a cancel ends the wait, and a line whose
workers went away under it is asked again once they are back."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from hpc_chat.batch.input import BatchItem
from hpc_chat.server import batch_runner
from hpc_chat.server.batch_runner import BatchRunner, Gate
from hpc_chat.server.board import EngineBoard


class Workflow:
    def __init__(self, results, workers=2):
        self.results, self.workers, self.asked = list(results), workers, 0
        self.agents = {"a": None}
        self.loaded = SimpleNamespace(settings=SimpleNamespace(
            executor=SimpleNamespace(max_workers=2),
            performance=SimpleNamespace(batch_size=4)))
        self.site_model = SimpleNamespace(engine="node", engine_slots=8)

    async def get_parsl_stats(self):
        return {"active_workers": self.workers, "managers": 1}

    async def submit_request(self, *args, **kwargs):
        self.asked += 1
        return self.results.pop(0)


def state(wf, ready=True, in_flight=0):
    return SimpleNamespace(workflow=wf, ready=ready, in_flight=in_flight, board=EngineBoard())


def test_the_window_is_the_engine_slots_and_a_micro_batch_less_interactive_requests():
    gate = Gate(state(Workflow([]), in_flight=3))
    # two workers of micro-batches of 4 feed one node engine of 8 slots: 8, and 4 more
    assert asyncio.run(gate.capacity()) == 8 + 4

    async def fill():
        got = 0
        for _ in range(12):
            try:
                await asyncio.wait_for(gate.acquire(lambda: False), 0.3)
            except TimeoutError:
                break
            got += 1
        return got
    assert asyncio.run(fill()) == 12 - 3  # three interactive requests keep their places


def test_the_window_follows_the_slot_cap_the_engines_say_they_run_at():
    """An engine of 16 slots that runs 8 (its cap has not grown, or a wider batch did not pay)
    gets 8 and one micro-batch more, not 16 and one more: an interactive request would
    otherwise wait behind a round and a half of batch lines."""
    wf = Workflow([], workers=8)  # 8 workers x 4: 32 requests the workers could hold
    wf.site_model.engine_slots = 16
    st = state(wf)
    gate = Gate(st)
    assert asyncio.run(gate.capacity()) == 16 + 4  # no engine has answered yet

    def answered(cap):
        st.board.saw({"responses": [{"engine": {"host": "n1", "pid": 7, "slots": 16},
                                     "engine_load": {"running": 8, "waiting": 4, "cap": cap},
                                     "worker": {"host": "n1", "pid": 3}}]})
        gate._checked = 0.0  # asked again at once, not after its 5 s
        return asyncio.run(gate.capacity())
    assert answered(8) == 8 + 4
    assert answered(16) == 16 + 4  # the cap grew: so does the window
    assert answered(0) == 16 + 4  # an engine too old to say: the site's slots


def test_nothing_is_sent_while_no_model_is_loaded_and_a_cancel_ends_the_wait():
    st = state(Workflow([]), ready=False)
    gate = Gate(st)
    stop = {"now": False}

    async def run():
        waiting = asyncio.ensure_future(gate.acquire(lambda: stop["now"]))
        await asyncio.sleep(0.2)
        assert not waiting.done() and gate.used == 0
        stop["now"] = True
        return await asyncio.wait_for(waiting, 1.0)
    assert asyncio.run(run()) is False and gate.used == 0


def item():
    return BatchItem("q1", "hello", 1, request=None)


def failed(kind):
    return {"ok": False, "error": "lost", "error_kind": kind, "error_code": "generation_failed"}


def test_a_line_whose_workers_went_away_is_asked_again_once_they_are_back(monkeypatch):
    monkeypatch.setattr(batch_runner, "WORKERS_GONE_S", 0.0)
    wf = Workflow([failed("runtime"), {"ok": True, "response": "hi"}], workers=0)
    runner = BatchRunner.__new__(BatchRunner)
    runner.state = state(wf)
    got = asyncio.run(runner._answered(item(), lambda: False, Gate(runner.state)))
    assert got["ok"] is True and wf.asked == 2


def test_a_failure_with_workers_present_or_of_the_line_itself_is_the_lines_outcome():
    for kind, workers in (("runtime", 2), ("input", 0)):
        wf = Workflow([failed(kind), {"ok": True}], workers=workers)
        runner = BatchRunner.__new__(BatchRunner)
        runner.state = state(wf)
        got = asyncio.run(runner._answered(item(), lambda: False, Gate(runner.state)))
        assert got["ok"] is False and wf.asked == 1
