"""The multi-turn section (:mod:`hpc_chat.bench.multiturn`): each run on a server started for
it, warmed with openings outside the set, in ABBA order. The servers and conversations are
stand-ins that record what happened (the real ones run in `make bench`)."""

from __future__ import annotations

from contextlib import contextmanager

from hpc_chat.bench import multiturn, peers
from hpc_chat.bench.measure import prompts, warm_up_prompts


def test_each_run_has_a_server_of_its_own_warmed_outside_the_prompt_set(monkeypatch):
    started: list[str] = []
    talked: list[tuple[str, int, list[str] | None, int]] = []

    @contextmanager
    def serving():
        started.append(f"serve{len(started)}")
        yield started[-1], {"Authorization": "Bearer k"}

    @contextmanager
    def server(binary, threads, slots, port):
        started.append(f"server{slots}-{len(started)}")
        yield started[-1]

    def conversations_run(base, headers, body, conversations=16, turns=4, seed_base=0,
                          first=None):
        assert base == started[-1]  # the server started last, while it runs
        talked.append((base, conversations, first, seed_base))
        return {"wall_s": 1.0, "tokens": 10, "tok_s": 10.0, "req_s": 1.0,
                "prompt_tokens": 20}

    monkeypatch.setenv("HPC_CHAT_LLAMA_SERVER", __file__)  # any file: the servers are stand-ins
    monkeypatch.setattr(multiturn, "serving", serving)
    monkeypatch.setattr(peers, "llama_server", server)
    monkeypatch.setattr(multiturn, "conversations_run", conversations_run)
    out = multiturn.multiturn_workload(2, lambda text: None)
    assert out["order"] == ["hpc_chat", "llama_server_8", "llama_server_16",
                            "llama_server_16", "llama_server_8", "hpc_chat"]
    assert len(started) == 6 and len(talked) == 12
    warm, timed = talked[0::2], talked[1::2]
    assert [base for base, *_ in warm] == started == [base for base, *_ in timed]
    openings = warm_up_prompts(multiturn.CONVERSATIONS)
    assert all(n == multiturn.CONVERSATIONS and first == openings for _, n, first, _ in warm)
    assert not set(openings) & set(prompts(1000))  # the whole set, cycled: none of them
    assert all(n == multiturn.CONVERSATIONS and first is None for _, n, first, _ in timed)
    assert [seed for *_, seed in timed] == [0, 0, 0, 1000, 1000, 1000]  # a peer's k-th run
    assert out["fresh_peers"] is True and set(out["llama_server"]) == {"8", "16"}
