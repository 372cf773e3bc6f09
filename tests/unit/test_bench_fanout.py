"""The demo's fan-out in ``make bench``: llama.cpp's time for the demo's own schedule, the runs'
ABBA order, and the section and verdict the report writes from them."""

from hpc_chat.bench import fanout
from hpc_chat.bench.report import markdown, verdicts
from hpc_chat.bench.workloads import schedule_s
from tests.unit.test_bench_report import results


def widths(*tg: float, pp: float = 100.0) -> dict[str, dict[str, float]]:
    return {str(w): {"tg_tok_s": speed, "pp_tok_s": pp, "tok_s": speed * 0.9}
            for w, speed in enumerate(tg, 1)}


def test_each_stretch_of_the_schedule_runs_at_its_own_width():
    """Answers of 10, 30 and 60 tokens: 3 sequences for 10 steps (30 tokens), 2 for 20 (40),
    1 for 30 (30), each at the generation speed llama-batched-bench measured with that many
    sequences; the 50 prompt tokens at its prompt speed with 3."""
    speeds = widths(10.0, 20.0, 30.0, pp=50.0)
    assert schedule_s([60, 10, 30], 50, speeds) == 30 / 30.0 + 40 / 20.0 + 30 / 10.0 + 1.0
    assert schedule_s([8, 8], 0, widths(10.0, 16.0)) == 1.0  # ending together: one width


def test_the_runs_go_in_abba_order_and_the_native_runs_take_the_demos_shape(monkeypatch,
                                                                           tmp_path):
    ran: list[str] = []
    demo = {"wall_s": 12.0, "tokens": 100, "tok_s": 8.0, "req_s": 0.4,
            "answers": [10, 30, 60], "prompt_tokens": 300, "cached_tokens": 30,
            "median_prompt_tokens": 90, "start_s": 4.0}

    def demo_run(path):
        ran.append("demo")
        return {**demo, "steady_tok_s": 10.0 + len(ran)}

    def native(binary, prompt_tokens, threads, widths_, generate):
        ran.append("native")
        assert (prompt_tokens, widths_, generate) == (90, (1, 2, 3), 60)
        return widths(10.0 * len(ran), 20.0, 30.0)

    binary = tmp_path / "llama-batched-bench"
    binary.write_text("")
    monkeypatch.setenv("HPC_CHAT_LLAMA_BATCHED_BENCH", str(binary))
    monkeypatch.setattr(fanout, "demo_run", demo_run)
    monkeypatch.setattr(fanout, "llama_batched_bench_run", native)
    out = fanout.fanout_workload(3, lambda text: None)
    assert ran == ["demo", "native", "native", "demo", "demo", "native"]
    assert out["order"] == ["hpc_chat", "llama_batched_bench", "llama_batched_bench",
                            "hpc_chat", "hpc_chat", "llama_batched_bench"]
    assert out["hpc_chat"]["steady_tok_s"] == 14.0  # runs 1, 4, 5: 11, 14, 15
    assert out["llama_batched_bench"]["widths"][1]["tg_tok_s"] == 30.0  # runs 2, 3, 6
    assert out["prompts"] == 4  # examples/demo-prompts.jsonl

    res = results()
    res["fanout"] = out
    text = markdown(res, "p.png")
    # llama.cpp: 30/30 + 40/20 + 30/30 s of generating and 270/100 s for the prompt tokens
    # hpc_chat evaluated (300 counted, 30 of them found cached): 6.7 s
    ceiling = 100 / (1.0 + 2.0 + 1.0 + 2.7)
    assert "| llama.cpp, the same schedule (from `llama-batched-bench` at each width) | 100 | " \
        f"{ceiling:.1f} | |" in text
    assert "routed to 3 answers of 10, 30, 60 tokens decoded together" in text
    assert "plus the 270 prompt tokens hpc_chat evaluated at its prompt speed (of 300 " \
        "counted: the other 30 were system prompts" in text
    judged = {desc: (value, ok) for desc, value, _, ok in verdicts(res)}
    value, ok = judged[next(d for d in judged if d.startswith("the demo's fan-out"))]
    assert round(value, 3) == round(14.0 / ceiling, 3) and ok


def test_without_the_native_peer_nothing_is_judged(monkeypatch):
    monkeypatch.delenv("HPC_CHAT_LLAMA_BATCHED_BENCH", raising=False)
    monkeypatch.setattr(fanout, "demo_run", lambda path: {
        "wall_s": 12.0, "tokens": 100, "tok_s": 8.0, "req_s": 0.4, "answers": [100],
        "prompt_tokens": 90, "cached_tokens": 0, "median_prompt_tokens": 90, "start_s": 4.0,
        "steady_tok_s": 12.5})
    out = fanout.fanout_workload(1, lambda text: None)
    res = results()
    res["fanout"] = out
    assert "llama-batched-bench: not measured" in markdown(res, "p.png")
    assert not [v for v in verdicts(res) if v[0].startswith("the demo's fan-out")]


def test_demo_runs_that_disagree_on_their_answers_are_refused(monkeypatch):
    import pytest

    monkeypatch.delenv("HPC_CHAT_LLAMA_BATCHED_BENCH", raising=False)
    answers = iter([[10, 20], [10, 20, 30]])
    monkeypatch.setattr(fanout, "demo_run", lambda path: {
        "wall_s": 1.0, "tokens": 30, "tok_s": 30.0, "req_s": 2.0, "answers": next(answers),
        "prompt_tokens": 90, "cached_tokens": 0, "median_prompt_tokens": 45, "start_s": 1.0,
        "steady_tok_s": 40.0})
    with pytest.raises(RuntimeError, match="different numbers of answers"):
        fanout.fanout_workload(2, lambda text: None)
