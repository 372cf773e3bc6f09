"""The benchmark report is written from the results alone: verdicts, tables, README block."""

from hpc_chat.bench.report import README_END, README_START, markdown, readme_block, verdicts


def results(overhead=1.03, stub=2.0, best=200.0, direct=80.0, single=150.0, ceiling=290.0):
    cfg = {"workers": 1, "threads": 2, "batch": 8, "wall_s": 10.0, "tok_s": best,
           "req_s": 3.2, "vs_direct": best / direct, "first_latency_s": 1.0,
           "steady_latency_s": 0.2, "model_loads": 1, "workers_seen": 1, "blocks": 1}
    return {"meta": {"date": "2026-11-28 02:00", "cores": 2, "repeats": 3, "requests": 32,
                     "overhead_requests": 16, "max_tokens": 64, "model_bytes": 98_000_000},
            "overhead": {"direct": {"wall_s": 10.0, "tok_s": direct, "req_s": 1.6},
                         "workflow": {"wall_s": 10.0 * overhead, "tok_s": direct / overhead,
                                      "req_s": 1.6 / overhead},
                         "ratio": overhead, "per_request_ms": 18.0,
                         "stubbed": {"p50_ms": stub, "p95_ms": stub * 2, "tasks_s": 900.0}},
            "throughput": {"direct": {"wall_s": 25.0, "tok_s": direct, "req_s": 1.3},
                           "configs": [cfg], "llama_server": None,
                           "llama_server_note": "not measured"},
            "warm_start": {"first_latency_s": 1.0, "steady_latency_s": 0.2,
                           "model_loads_per_worker": 1},
            "slurm": None,
            "limit": {"copy_gb_s": 27.0, "ceiling_tok_s": ceiling,
                      "single_stream_tok_s": single, "fraction": single / ceiling}}


def test_verdicts_follow_the_targets():
    met = {desc: ok for desc, _, _, ok in verdicts(results())}
    assert all(met.values())
    missed = {desc: ok for desc, _, _, ok in verdicts(results(overhead=1.2, best=150.0,
                                                              single=100.0, stub=7.0))}
    assert not any(missed.values())


def test_markdown_reports_misses_with_numbers():
    text = markdown(results(overhead=1.2), "performance.png")
    assert "| orchestration wall time / direct loop (64-token answers) | 1.2 | ≤ 1.05 | no |" \
        in text
    assert "## Targets missed" in text and "![tokens per second](performance.png)" in text
    assert "Not measured: no local Slurm was up" in text


def test_readme_block_is_delimited():
    block = readme_block(results())
    assert block.startswith(README_START) and block.endswith(README_END)
    assert "2.50x the plain loop" in block
