"""The collaboration section of ``make bench``: its runs go in ABBA order, each peer is summed
up by its median run with the range, and the report says what was compared."""

from contextlib import contextmanager

from hpc_chat.bench import collaboration, peers
from hpc_chat.bench.report import markdown, verdicts
from tests.unit.test_bench_report import results


def test_the_peers_run_in_abba_order_and_the_median_run_stands_for_each(monkeypatch, tmp_path):
    """Each peer's first run before any peer's second, then the reverse. The runs are
    stand-ins that record when they ran (the order is what is tested, not the figures)."""
    ran: list[str] = []

    def run(name: str) -> dict:
        ran.append(name)
        return {"wall_s": 10.0, "tok_s": float(len(ran)), "req_s": 1.0, "tokens": 100,
                "prompt_tokens": 10 * len(ran), "requests": 256}

    started: list[str] = []  # each llama-server started, by the URL it answered on
    urls: list[str] = []  # the server each of llama-server's runs was sent to

    @contextmanager
    def server(binary, threads, slots):
        assert slots == 8
        started.append(f"http://127.0.0.1:{len(started) + 1}/v1")
        yield started[-1]

    def peer(url, questions, concurrent):
        urls.append(url)
        return run("concurrent" if concurrent else f"sequential{len(questions)}")

    binary = tmp_path / "llama-server"
    binary.write_text("")
    monkeypatch.setenv("HPC_CHAT_LLAMA_SERVER", str(binary))
    monkeypatch.setattr(collaboration, "hpc_chat_run", lambda questions, mode, agents: {
        **run("hpc_chat"), "steady_tok_s": 100.0 - len(ran), "start_s": 2.0,
        "replies": ["r"]})
    monkeypatch.setattr(collaboration, "peer_run", peer)
    monkeypatch.setattr(peers, "llama_server", server)
    monkeypatch.setattr(collaboration, "quality_check", lambda: {
        "questions": 2, "route": 0.5, "review": 0.5, "route_tokens": 10, "review_tokens": 40})
    out = collaboration.collaboration_workload(8, 3, lambda text: None)
    names = ["hpc_chat", "concurrent", "sequential8"]
    assert ran == names + names[::-1] + names
    # every run of llama-server's on a server of its own: no run finds an earlier one's
    # prompts in its cache, as no hpc-chat batch run does
    assert urls == started and len(set(urls)) == 6
    assert out["order"] == ["hpc_chat", "concurrent", "sequential",
                            "sequential", "concurrent", "hpc_chat",
                            "hpc_chat", "concurrent", "sequential"]
    # hpc_chat is judged by its tokens/s after the start: runs 1, 6 and 7 gave 99, 94, 93
    assert out["hpc_chat"]["steady_tok_s"] == 94.0
    assert (out["hpc_chat"]["steady_tok_s_min"], out["hpc_chat"]["steady_tok_s_max"]) == \
        (93.0, 99.0)
    assert out["hpc_chat"]["prompt_tokens"] == 60 and "replies" not in out["hpc_chat"]
    assert out["concurrent"]["tok_s"] == 5.0 and out["concurrent"]["prompt_tokens"] == 50
    assert len(out["sequential"]["runs"]) == 3

    res = results()
    res["collaboration"] = out
    text = markdown(res, "p.png")
    assert "in ABBA order: hpc_chat, concurrent, sequential, sequential, concurrent" in text
    assert "a server started afresh for each run (its start not timed)" in text
    assert "| `hpc-chat batch --mode synthesize` | 256 | 60 | 10.0 | 6.0 | 94.0 | " \
        "93.0-99.0 |" in text
    assert "| llama-server, each round's requests together | 256 | 50 | 10.0 | 5.0 | | " \
        "2.0-8.0 |" in text
    judged = [v for v in verdicts(res) if v[0].startswith("3-agent synthesize")]
    assert [(round(v[1], 2), v[3]) for v in judged] == [(18.8, True)]  # 94 / 5
    assert "Why the target is missed" not in text
    res["collaboration"]["hpc_chat"]["steady_tok_s"] = 5.5  # 1.1x: missed, and said why
    assert "Why the target is missed: a round's requests already reach llama-server " \
        "together" in markdown(res, "p.png")
    assert "(0.60 and 0.50 prompt tokens per generated token)" in markdown(res, "p.png")


def test_an_older_results_file_without_ranges_still_reports():
    res = results()
    rate = {"wall_s": 300.0, "tok_s": 110.0, "req_s": 0.9, "tokens": 30000, "requests": 256}
    res["collaboration"] = {
        "date": "2026-12-05 12:00", "machine": "Intel Xeon (host vm)", "cores": 2,
        "prompts": 64, "agents": list(collaboration.AGENTS), "aggregator": "balanced_agent",
        "repeats": 1, "sequential_prompts": 16,
        "hpc_chat": {**rate, "steady_tok_s": 111.0, "start_s": 4.0},
        "concurrent": {**rate, "tok_s": 112.0},
        "sequential": {**rate, "tok_s": 75.0, "requests": 64},
        "quality": {"questions": 24, "route": 0.5, "review": 0.4, "route_tokens": 400,
                    "review_tokens": 12000}}
    text = markdown(res, "p.png")
    assert "| `hpc-chat batch --mode synthesize` | 256 |  | 300.0 | 110.0 | 111.0 |  |" in text
    assert "one server started beforehand and kept across the runs" in text  # no flag: older
    assert "ABBA" not in text.split("## Agents that collaborate")[1].split("##")[0]


def test_equal_lengths_give_both_peers_the_natural_runs_lengths(monkeypatch, tmp_path):
    """A first, natural hpc-chat run gives each prompt's length; every later run, ours and
    llama-server's, is asked for exactly those lengths, in ABBA order; the report shows both
    peers' tokens and judges the ratio against the target."""
    from hpc_chat.bench import collab_equal

    asked: list[tuple[str, object]] = []

    def ours(questions, mode, agents, lengths=None):
        asked.append(("hpc_chat", lengths))
        return {"wall_s": 10.0, "tok_s": 90.0, "req_s": 1.0, "tokens": 4 * 18,
                "prompt_tokens": 300, "requests": 12, "start_s": 1.0,
                "steady_tok_s": 100.0 if lengths else 50.0, "replies": ["r"] * 3,
                "lengths": [7, 5, 6] if lengths is None else [9, 9, 9]}

    def peer(url, questions, concurrent, lengths=None):
        asked.append(("concurrent", lengths))
        assert url == started[-1]  # a server started for this run
        assert concurrent and len(questions) == 3
        return {"wall_s": 9.0, "tok_s": 125.0, "req_s": 1.3, "tokens": 4 * 18,
                "prompt_tokens": 310, "requests": 12}

    started: list[str] = []

    @contextmanager
    def server(binary, threads, slots):
        started.append(f"http://127.0.0.1:{len(started) + 1}/v1")
        yield started[-1]

    binary = tmp_path / "llama-server"
    binary.write_text("")
    monkeypatch.setenv("HPC_CHAT_LLAMA_SERVER", str(binary))
    monkeypatch.setattr(collab_equal, "hpc_chat_run", ours)
    monkeypatch.setattr(collab_equal, "peer_run", peer)
    monkeypatch.setattr(peers, "llama_server", server)
    out = collab_equal.collab_equal_workload(3, 2, lambda text: None)
    assert asked == [("hpc_chat", None), ("hpc_chat", [7, 5, 6]), ("concurrent", [7, 5, 6]),
                     ("concurrent", [7, 5, 6]), ("hpc_chat", [7, 5, 6])]
    assert len(started) == 2 and len(set(started)) == 2  # a server for each run of its own
    assert out["fresh_servers"] is True
    assert out["lengths"] == [7, 5, 6] and out["expected_tokens"] == 4 * 18
    assert "replies" not in out["hpc_chat"] and "lengths" not in out["hpc_chat"]

    res = results()
    res["collaboration_equal"] = out
    text = markdown(res, "p.png")
    assert "| `hpc-chat batch --mode synthesize` | 12 | 300 | 72 | 90.0 | 100.0 | " in text
    assert "| llama-server, each round's requests together | 12 | 310 | 72 | 125.0 | |" in text
    assert "runs the pattern at 0.80x the concurrent client's tokens/s" in text
    assert "hpc_chat's runs (each a fresh `hpc-chat batch`, its engine started anew) made " \
        "100.0, 100.0 tokens/s after the start, and the concurrent client's, each on a " \
        "llama-server started for it, 125.0, 125.0." in text
    out.pop("fresh_servers")  # an older results file: one server for every run, and said so
    assert "all on one llama-server started before the first (a later run could find the " \
        "earlier runs' prompts in its prompt cache), 125.0, 125.0." in markdown(res, "p.png")
    judged = [v for v in verdicts(res) if "one length on both" in v[0]]
    assert [(round(v[1], 2), v[3]) for v in judged] == [(0.8, False)]
    monkeypatch.delenv("HPC_CHAT_LLAMA_SERVER")
    assert collab_equal.collab_equal_workload(3, 1, lambda text: None) is None
