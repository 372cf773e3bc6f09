"""Each token's log-probability from its row of logits (hpc_chat.llm.logprobs)."""

import math

import numpy as np

from hpc_chat.llm.logprobs import entry, within


def piece(token: int) -> bytes:
    return f"t{token}".encode()


def test_log_softmax_of_the_row_and_the_likeliest_first():
    row = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    norm = math.log(sum(math.exp(x) for x in row))
    got = entry(row, 2, 3, piece)
    assert got["token"] == "t2" and got["bytes"] == list(b"t2")
    assert math.isclose(got["logprob"], 2.0 - norm, rel_tol=1e-6)
    assert [t["token"] for t in got["top_logprobs"]] == ["t1", "t2", "t0"]
    assert math.isclose(got["top_logprobs"][0]["logprob"], 3.0 - norm, rel_tol=1e-6)
    assert sum(math.exp(t["logprob"]) for t in got["top_logprobs"]) < 1.0
    assert entry(row, 2, 0, piece)["top_logprobs"] == []


def test_a_row_of_a_real_vocabulary_size_stays_finite():
    row = np.random.default_rng(0).normal(0, 30, 49152).astype(np.float32)
    got = entry(row, int(row.argmax()), 20, piece)
    assert got["logprob"] == got["top_logprobs"][0]["logprob"] <= 0.0
    assert all(math.isfinite(t["logprob"]) for t in got["top_logprobs"])
    assert len(got["top_logprobs"]) == 20


def test_the_entries_kept_are_those_of_the_tokens_that_begin_within_the_answer():
    entries = [{"token": t, "bytes": list(t.encode())} for t in ("ab", "c", "STOP", "x")]
    assert [e["token"] for e in within(entries, 3)] == ["ab", "c"]
    assert [e["token"] for e in within(entries, 4)] == ["ab", "c", "STOP"]  # begins in it
    assert within(entries, 0) == []
