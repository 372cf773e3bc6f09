"""The equal-lengths section (:mod:`hpc_chat.bench.equal`): what each peer is sent, in which
order, and what is read from the counters. The servers are stand-ins that record what they
were sent (the real ones run in `make bench`); what is tested is the bookkeeping."""

from __future__ import annotations

from contextlib import contextmanager

from hpc_chat.bench import equal, peers
from hpc_chat.bench.measure import prompts

METRICS = """# HELP llamacpp:n_decode_total Total number of llama_decode() calls
llamacpp:prompt_tokens_total 31
llamacpp:n_decode_total 20
llamacpp:n_busy_slots_per_decode 1.5
"""


def test_llama_servers_metrics_and_the_counters_per_decode_call():
    assert equal.parse_metrics(METRICS) == (20.0, 30.0)
    assert equal.parse_metrics("llamacpp:n_decode_total 20\n") is None  # an older build
    assert equal.per_decode((20.0, 30.0), (30.0, 100.0), ours=False) == {
        "busy_slots_per_decode": 7.0}
    assert equal.per_decode((2, 2, 0), (43, 45, 312), ours=True) == {
        "busy_slots_per_decode": 312 / 41, "passes_per_decode": 43 / 41}
    assert equal.per_decode(None, (43, 45, 312), ours=True) == {}  # no engine answered
    assert equal.per_decode((20.0, 30.0), (20.0, 30.0), ours=False) == {}


def test_every_peer_gets_the_same_requests_each_run_with_new_seeds_in_abba_order(monkeypatch):
    """Each run on a server started for it and warmed with prompts outside the set, so no
    run finds the set's prompts in a cache an earlier run (or the warm-up) left."""
    sent: list[tuple[str, int, list]] = []
    started: list[str] = []  # each server started, by the name it answers to

    def warm(bodies) -> bool:
        return all("Warm-up" in b["messages"][-1]["content"] for b in bodies)

    def send(base, headers, bodies, clients):
        assert base == started[-1]  # sent to the server started last, while it runs
        sent.append((base, clients, bodies))
        lengths = [b["max_tokens"] for b in bodies]
        timed = [x for x in sent[1:] if not warm(x[2])]
        if not warm(bodies) and len(timed) == 4:  # server8's first 8-client run: one cut short
            lengths[0] -= 1
        return {"wall_s": 1.0, "tokens": sum(lengths), "tok_s": 100.0, "req_s": 1.0,
                "prompt_tokens": 50, "lengths": [7, 0, 30][:len(bodies)] * (
                    len(bodies) // 3) if base == "serve" and len(sent) == 1 else lengths}

    @contextmanager
    def serving(homes):
        homes.append("/nowhere")
        started.append("serve")
        yield "serve", {"Authorization": "Bearer k"}

    @contextmanager
    def server(binary, threads, slots, *extra, port):
        started.append(f"server{slots}{''.join(extra[1:])}")
        yield started[-1]

    monkeypatch.setenv("HPC_CHAT_LLAMA_SERVER", __file__)  # any file: the servers are stand-ins
    monkeypatch.setattr(equal, "send", send)
    monkeypatch.setattr(equal, "serving", serving)
    monkeypatch.setattr(peers, "llama_server", server)
    monkeypatch.setattr(equal, "engine_counters", lambda home: None)
    monkeypatch.setattr(equal, "busy_slots", lambda base: None)
    monkeypatch.setattr(equal, "server_version", lambda binary: "version: test")
    out = equal.equal_workload(3, 2, lambda text: None)
    assert out["lengths"] == [7, 1, 30]  # natural lengths, at least 1 token
    # after the natural pass: every run warms a server of its own, then times it
    assert [warm(bodies) for _, _, bodies in sent[1:]] == [True, False] * 20
    assert len(started) == 1 + 20 and started[1:] == [base for base, _, _ in sent[1::2]]
    warmed = {str(b["messages"]) for _, _, bodies in sent[1::2] for b in bodies}
    timed = sent[2::2]
    assert not warmed & {str(b["messages"]) for _, _, bodies in timed for b in bodies}
    assert not {m["content"] for r in equal.warm_requests(64) for m in r.messages} & \
        set(prompts(1000))  # nor any line of the whole set
    order = [f"{base}/{'open' if clients == 3 else 'clients'}" for base, clients, _ in timed]
    forward = ["serve/open", "serve/clients", "server8/open", "server8/clients",
               "server16/open", "server16/clients", "server32/open", "server32/clients",
               "server8-kvu/open", "server8-kvu/clients"]
    assert order == forward + forward[::-1]
    for base, _, bodies in timed:
        assert [b["max_tokens"] for b in bodies] == [7, 1, 30]
        assert all(b["ignore_eos"] is True for b in bodies)
    seeds = {(base, tuple(b["seed"] for b in bodies)) for base, _, bodies in timed}
    # a peer's k-th run has the k-th seeds, whichever way; no seed is sent twice to one peer
    assert {s for _, s in seeds} == {(1000, 1001, 1002), (2000, 2001, 2002),
                                      (3000, 3001, 3002), (4000, 4001, 4002)}
    serve_seeds = [tuple(b["seed"] for b in bodies) for base, _, bodies in timed
                   if base == "serve"]
    assert len(set(serve_seeds)) == 4
    messages = {tuple(str(b["messages"]) for b in bodies) for _, _, bodies in timed}
    assert len(messages) == 1  # the same prompts, in the same order, to every peer
    assert out["peers"]["hpc_chat"]["open"]["lengths_match"] is True
    cut = out["peers"]["llama_server_8"]["clients"]["runs"]
    assert [run["lengths_match"] for run in cut] == [False, True]
    assert out["fresh_peers"] is True
    assert out["server_version"] == "version: test"
