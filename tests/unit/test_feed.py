"""The queue a decode loop takes its requests from (hpc_chat.llm.feed)."""

from __future__ import annotations

import threading

import pytest

from hpc_chat.llm.feed import Feed, Job
from hpc_chat.protocol.request import GenRequest


def job(outcomes: list, text="x") -> Job:
    return Job(GenRequest(messages=[{"role": "user", "content": text}]), outcomes.append)


def test_take_skips_cancelled_jobs_and_tells_them():
    outcomes: list = []
    feed = Feed()
    first, second, third = job(outcomes, "a"), job(outcomes, "b"), job(outcomes, "c")
    second.cancelled.set()
    for j in (first, second, third):
        feed.put(j)
    assert feed.take(5, block=False) == [first, third]
    assert len(outcomes) == 1 and "cancelled" in str(outcomes[0])
    assert feed.take(5, block=False) == []


def test_take_honours_its_limit_and_keeps_the_order():
    feed = Feed()
    jobs = [job([], str(i)) for i in range(5)]
    for j in jobs:
        feed.put(j)
    assert feed.take(2, block=False) == jobs[:2]
    assert feed.waiting() == 3
    assert feed.take(0, block=False) == []
    assert feed.take(10, block=False) == jobs[2:]


def test_a_blocked_take_wakes_for_a_job_and_for_close():
    feed = Feed()
    got = []
    taker = threading.Thread(target=lambda: got.append(feed.take(4, block=True)))
    taker.start()
    feed.put(j := job([]))
    taker.join(10)
    assert got == [[j]]
    taker = threading.Thread(target=lambda: got.append(feed.take(4, block=True)))
    taker.start()
    feed.close()
    taker.join(10)
    assert got[-1] == [] and feed.closed


def test_drain_fails_the_waiting_and_refuses_new_jobs():
    outcomes: list = []
    feed = Feed([job(outcomes), job(outcomes)])
    feed.drain(RuntimeError("the loop failed"))
    assert [str(o) for o in outcomes] == ["the loop failed"] * 2
    with pytest.raises(RuntimeError, match="stopped"):
        feed.put(job(outcomes))


def test_a_cancelled_jobs_listener_is_told_outside_the_feeds_lock():
    """A node engine's listener takes its own lock, which its status reader holds while it
    asks the feed how many wait: told under the feed's lock, the two would wait for each
    other for ever. Here the listener asks the feed from another thread, and gets its
    answer at once."""
    seen: list = []
    feed = Feed()

    def done(outcome):
        asker = threading.Thread(target=lambda: seen.append(feed.waiting()))
        asker.start()
        asker.join(5)
        seen.append(asker.is_alive())

    cancelled = Job(GenRequest(messages=[{"role": "user", "content": "x"}]), done)
    cancelled.cancelled.set()
    feed.put(cancelled)
    assert feed.take(4, block=False) == []
    assert seen == [0, False]
