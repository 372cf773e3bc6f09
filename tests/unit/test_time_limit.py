"""A task's own time limit: per thread, raised as TaskTimeout with the limit in its message,
and never an exception thrown into a thread outside a Parsl worker."""

from __future__ import annotations

import threading
import time

import pytest

from hpc_chat.errors import TaskTimeout
from hpc_chat.worker import time_limit
from hpc_chat.worker.retry import is_retryable, is_timeout


def test_a_limit_runs_out_and_says_which_setting_it_is():
    with time_limit.limited(60):
        time_limit.check(time_limit.deadline())  # not yet, however slow the machine
    with time_limit.limited(0.05):
        limit = time_limit.deadline()
        time.sleep(0.1)
        with pytest.raises(TaskTimeout, match=r"timed out after 0\.05 s "
                                              r"\(performance\.timeout_seconds\)") as caught:
            time_limit.check(limit)
    assert time_limit.deadline() is None  # the limit ends with its task
    assert is_timeout(caught.value) and is_retryable(caught.value)


def test_no_limit_never_runs_out():
    with time_limit.limited(None):
        assert time_limit.deadline() is None and time_limit.left(None) is None
        time_limit.check(None)


def test_each_thread_keeps_its_own_limit():
    """The local executor runs tasks in threads of one process: one task's limit is not
    another's."""
    seen = {}

    def task(name, seconds):
        with time_limit.limited(seconds):
            time.sleep(0.02)
            seen[name] = time_limit.deadline()[1]

    threads = [threading.Thread(target=task, args=(n, s)) for n, s in (("a", 5.0), ("b", 9.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": 5.0, "b": 9.0}


def test_decoding_in_this_process_has_a_limit_only_in_a_parsl_worker(monkeypatch):
    """Threads of the driver (the local executor) decode without one, as they always have."""
    with time_limit.limited(5.0):
        monkeypatch.delenv("PARSL_WORKER_RANK", raising=False)
        assert time_limit.in_process() is None
        monkeypatch.setenv("PARSL_WORKER_RANK", "0")
        assert time_limit.in_process() == time_limit.deadline()


def test_an_answer_decoded_here_stops_at_its_next_token_once_the_limit_runs_out():
    heard = []

    def stream(text):
        heard.append(text)
        return True

    assert time_limit.watch(None, stream) is stream and time_limit.watch(None, None) is None
    on_text = time_limit.watch((time.monotonic() + 60, 60.0), stream)
    assert on_text("a") and heard == ["a"]
    on_text = time_limit.watch((time.monotonic() - 1, 4.0), stream)
    assert on_text("ab") is False and heard == ["a"]  # the engine stops; the stream hears no more


@pytest.mark.parametrize("n_seq", [None, 2])
def test_a_task_decoding_in_its_own_process_stops_at_its_limit(monkeypatch, n_seq):
    """``model.engine: worker`` in a Parsl worker: the echo model's 400 tokens of 0.05 s (20 s)
    against a limit of 0.5 s. The answer stops at its next token and the task fails with the
    limit; unbatched and batched alike."""
    from hpc_chat.worker.tasks import chat_batch_task, chat_task

    monkeypatch.setenv("PARSL_WORKER_RANK", "0")
    agent = {"name": "slow", "config": {"model": "default", "system_prompt": "Repeat.",
                                        "max_tokens": 400}}
    context = {"model": {"engine": "worker", "override": "echo?tokens=400&token_s=0.05"}}
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="timed out after 0.5 s"):
        if n_seq is None:
            chat_task(agent, "slow answer", context, time_limit=0.5)
        else:
            chat_batch_task(agent, [{"message": f"slow {i}", "context": context}
                                    for i in range(2)], n_seq=n_seq, time_limit=0.5)
    assert time.monotonic() - started < 15  # stopped, not decoded to the end (20 s)
    quick = {"model": {"engine": "worker", "override": "echo?tokens=3&token_s=0.01"}}
    assert chat_task(agent, "quick one", quick, time_limit=30)["content"]


def test_orders_to_an_engine_that_stops_reading_cannot_hold_the_task(tmp_path):
    """An engine that accepts a connection and reads nothing more (stopped, swapping): a
    task whose orders overflow the socket's buffers (4 MiB) sends them from a thread of its
    own, which blocks; ending the channel (the task ran out of time, or failed) cuts the
    connection under that send at once. Orders that fit a fresh buffer go out inline."""
    from multiprocessing.connection import Client, Listener

    from hpc_chat.worker.engine_client import _Channel

    listener = Listener(str(tmp_path / "engine.sock"), family="AF_UNIX")
    accepted: list = []
    acceptor = threading.Thread(target=lambda: accepted.extend(
        listener.accept() for _ in range(2)), daemon=True)
    acceptor.start()
    small = Client(str(tmp_path / "engine.sock"), family="AF_UNIX")
    assert _Channel(small, [b"y" * 100] * 4).thread is None
    conn = Client(str(tmp_path / "engine.sock"), family="AF_UNIX")
    channel = _Channel(conn, [b"x" * 65536] * 64)
    time.sleep(0.5)
    assert channel.thread is not None and channel.thread.is_alive()  # nobody reads
    started = time.monotonic()
    channel.end()
    assert not channel.thread.is_alive() and time.monotonic() - started < 5
    for c in (small, conn, *accepted):
        c.close()
    listener.close()
