"""The benchmark cases. Every figure is the median of ``repeats`` runs, and every comparison is a
ratio of two figures measured in the same run, on the embedded model with fixed seeds and the
shipped prompt set (``prompts.txt``).

1. orchestration overhead: the workflow (local site, 1 worker, unbatched) against a plain
   llama-cpp-python loop with the same settings; and Parsl with inference stubbed out.
2. throughput: generated tokens/s and requests/s for workers x threads splits of this machine,
   unbatched and batched, against the direct loop (and llama-server when one is given).
3. warm start: first-request latency against the steady state, and model loads per worker.
4. scaling on Slurm: the same batch through pilot jobs on the local Slurm (when it is up).
5. the physical limit: copy bandwidth / bytes of weights read per token = the single-stream
   ceiling, against measured single-stream generation.

A profile of batched decoding (where the time goes, and what a generated token costs at each
batch size) explains the throughput figures; the report shows it.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from hpc_chat.bench.measure import (
    MAX_TOKENS,
    SYSTEM_AGENT,
    TWO_NODE_PROFILE,
    batched_profile,
    copy_bandwidth,
    direct_loop,
    machine_description,
    median_of,
    noop,
    prompts,
    single_stream_generation,
    slurm_up,
    two_nodes_up,
)
from hpc_chat.bench.peers import llama_batched_bench_run, llama_server_run, serve_run


# ----------------------------------------------------------------------------- workflow runs
def write_configs(tmp: Path, workers: int, threads: int, batch: int,
                  site: str = "local") -> tuple[str, str]:
    """A workflow YAML and a site profile for one configuration (built as data, written by
    ``yaml.safe_dump``: a value never becomes YAML syntax)."""
    import yaml

    from hpc_chat.sites.registry import load_profile

    profile = tmp / f"bench-{Path(site).stem}-{workers}x{threads}.yaml"  # a name, or a path
    cores = len(os.sched_getaffinity(0))
    if site == "local":
        data = {"name": "bench-local",
                "provider": {"type": "LocalProvider", "init_blocks": 1, "min_blocks": 1,
                             "max_blocks": 1},
                "executor": {"address": "127.0.0.1", "max_workers_per_node": workers,
                             "cores_per_worker": cores / workers},
                "model": {"n_threads": threads}}
    else:
        data = load_profile(site).model_dump(exclude_none=True)
        data["name"] = "bench-slurm"
        data["executor"]["max_workers_per_node"] = workers
        data["model"]["n_threads"] = threads
    profile.write_text(yaml.safe_dump(data, sort_keys=False))
    workflow = tmp / f"bench-{workers}x{threads}-b{batch}.yml"
    workflow.write_text(yaml.safe_dump({"name": "bench", "config": {
        "executor": {"type": "parsl", "max_workers": workers, "timeout": 300},
        "agents": [{"name": "balanced_agent", "config_file": SYSTEM_AGENT}],
        "data_units": {"conversation_history": {"type": "memory"}},
        "performance": {"batch_size": batch, "timeout_seconds": 600},
        "generation": {"max_tokens": MAX_TOKENS}}}, sort_keys=False))
    return str(workflow), str(profile)


async def _workflow_run(workflow: str, profile: str, n: int, workers: int) -> dict[str, Any]:
    from hpc_chat.driver.workflow import ParslChatWorkflow

    wf = ParslChatWorkflow(site=profile, history_path=None)
    await wf.initialize(workflow)
    try:
        await wf.wait_for_workers(workers, timeout=300)
        # warm-up: the first request per worker loads the model (case 3 measures that)
        cold = await asyncio.gather(*(wf.process_request(
            f"Warm up {i}.", agents=["balanced_agent"], options={"seed": 10_000 + i,
                                                                 "max_tokens": 4})
            for i in range(workers)))
        steady = []
        for i in range(3):
            r = await wf.process_request(f"Warm up {i}.", agents=["balanced_agent"],
                                         options={"seed": 20_000 + i, "max_tokens": 4})
            steady.append(r["latency_s"])
        start = time.perf_counter()
        results = await asyncio.gather(*(wf.process_request(
            p, agents=["balanced_agent"], options={"seed": i})
            for i, p in enumerate(prompts(n))))
        wall = time.perf_counter() - start
        stats = await wf.get_performance_stats()
        parsl_stats = await wf.get_parsl_stats()
    finally:
        await wf.shutdown()
    failed = [r["error"] for r in results if not r["ok"]]
    if failed:
        raise RuntimeError(f"benchmark requests failed: {failed[:3]}")
    tokens = sum(r["completion_tokens"] for r in results)
    responses = [resp for r in results + cold for resp in r["responses"]]
    pids = {resp["worker"]["pid"] for resp in responses}
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, "req_s": n / wall,
            "first_latency_s": max(r["latency_s"] for r in cold),
            "steady_latency_s": statistics.median(steady),
            "model_loads": stats["model_loads"], "workers_seen": len(pids),
            "hosts_seen": len({resp["worker"]["host"] for resp in responses}),
            "engines_seen": len({(resp.get("engine") or {}).get("pid") for resp in responses}),
            "blocks": len(parsl_stats.get("job_ids") or [0])}


def workflow_run(n: int, workers: int, threads: int, batch: int,
                 site: str = "local") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hpc_chat_bench_") as tmp:
        wf, profile = write_configs(Path(tmp), workers, threads, batch, site)
        return asyncio.run(_workflow_run(wf, profile, n, workers))


def hpc_chat_batch_run(n: int, agent_name: str = "balanced_agent",
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``hpc-chat batch`` with the packaged defaults, end to end, as a user runs it: a fresh
    process, the local site's workers and the node engine started, the model loaded, every
    answer written. The requests are an OpenAI batch file (so each line carries its seed, as
    the peers' requests do) to ``agent_name`` with its own settings, each body with ``extra``
    added (a ``response_format``); ``start_s`` is the time from launch until the first request
    began on a worker, ``valid_fraction`` the share of formatted answers that validated."""
    import sys

    with tempfile.TemporaryDirectory(prefix="hpc_chat_bench_") as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps({
            "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": agent_name, "seed": i, **(extra or {}),
                     "messages": [{"role": "user", "content": p}]}}) + "\n"
            for i, p in enumerate(prompts(n))))
        launched = time.time()
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "hpc_chat", "batch", str(src), "-o",
                               str(out)], capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"hpc-chat batch failed ({done.returncode}): "
                               f"{done.stderr[-600:]}")
        lines = [json.loads(x) for x in out.read_text().splitlines()]
    bodies = [x["response"]["body"] for x in lines]
    lengths = [b["usage"]["completion_tokens"] for b in bodies]
    agents = [a for b in bodies for a in b["hpc_chat"]["agents"]]
    first = min(a["start"] for a in agents)
    tokens = sum(lengths)
    formatted = [a["output_format"]["valid"] for a in agents if "output_format" in a]
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, "req_s": n / wall,
            "start_s": first - launched, "steady_tok_s": tokens / (wall - (first - launched)),
            "median_answer_tokens": statistics.median(lengths),
            "min_answer_tokens": min(lengths), "max_answer_tokens": max(lengths),
            "engines": len({(a["engine"] or {}).get("pid") for a in agents}),
            **({"valid_fraction": sum(formatted) / len(formatted)} if formatted else {})}


async def _first_token(wf, repeats: int = 5) -> float:
    """The median time from submitting a request to its first streamed text, warm workers."""
    from hpc_chat.driver.token_hub import TokenHub

    hub = TokenHub()
    await hub.start("127.0.0.1", ["127.0.0.1"])  # the local site's workers
    waits = []
    try:
        for i in range(repeats + 1):  # the first one warms the engine
            stream, spec = hub.open()
            start = time.perf_counter()
            task = wf.submit_request(f"Tell me about the number {i}.",
                                     agents=["balanced_agent"], stream=spec,
                                     options={"seed": i, "max_tokens": 32})
            await stream.queue.get()
            waits.append(time.perf_counter() - start)
            await task
    finally:
        await hub.stop()
    return statistics.median(waits[1:])


def first_token_run(repeats: int = 5) -> dict[str, float]:
    """First streamed token of a request on warm workers (what ``hpc-chat ask`` shows)."""
    from hpc_chat.driver.workflow import ParslChatWorkflow

    async def go():
        wf = ParslChatWorkflow(history_path=None)
        await wf.initialize()
        try:
            await wf.wait_for_workers(1, timeout=300)
            return {"first_token_s": await _first_token(wf, repeats)}
        finally:
            await wf.shutdown()

    return asyncio.run(go())


def real_workload(n: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The headline: the packaged agent with its own settings and natural answer lengths,
    ``n`` requests, against its peers in the same run on the same requests, in ABBA order
    (:func:`~hpc_chat.bench.measure.abba`): a machine that drifts weighs on each alike."""
    from functools import partial

    from hpc_chat.agents.config import AgentConfig
    from hpc_chat.bench.measure import runs_in_abba_order

    agent = AgentConfig.from_yaml(SYSTEM_AGENT)
    cores = len(os.sched_getaffinity(0))
    out: dict[str, Any] = {"requests": n, "agent": agent.name, "repeats": repeats,
                           "max_tokens": agent.config.max_tokens, "cores": cores,
                           "date": time.strftime("%Y-%m-%d %H:%M"),
                           "machine": machine_description()}
    peers: dict[str, Callable[[], dict]] = {"hpc_chat": partial(hpc_chat_batch_run, n, agent.name),
        "direct": partial(direct_loop, n, cores, max_tokens=None)}
    server_bin = os.environ.get("HPC_CHAT_LLAMA_SERVER")
    if server_bin and Path(server_bin).is_file():
        for slots in (8, 16):
            peers[f"llama_server/{slots}"] = partial(llama_server_run, server_bin, n, cores,
                                                     slots, max_tokens=None)
    for clients in (8, 16):  # warm serve, clients that each wait for their answer
        peers[f"hpc_chat_serve/{clients}"] = partial(serve_run, n, clients)
    out["order"], runs = runs_in_abba_order(peers, repeats, log, "real workload")
    done = {name: median_of(len(r), iter(r).__next__) for name, r in runs.items()}
    out["hpc_chat"], out["direct"] = done["hpc_chat"], done["direct"]
    for kind in ("llama_server", "hpc_chat_serve"):
        out[kind] = {name.split("/")[1]: r for name, r in done.items()
                     if name.startswith(f"{kind}/")}
    log("   first streamed token, warm workers")
    out["first_token"] = median_of(repeats, first_token_run)
    batched_bin = os.environ.get("HPC_CHAT_LLAMA_BATCHED_BENCH")
    out["llama_batched_bench"] = None
    if batched_bin and Path(batched_bin).is_file():
        log("   llama-batched-bench at the workload's median answer length")
        gen = max(1, round(out["hpc_chat"]["median_answer_tokens"]))
        native = [llama_batched_bench_run(batched_bin, 24, cores, (1, 8, 16), generate=gen)
                  for _ in range(repeats)]
        out["llama_batched_bench"] = {
            "prompt_tokens": 24, "generated_tokens": gen, "runs": native,
            "widths": {w: {k: statistics.median(r[w][k] for r in native) for k in native[0][w]}
                       for w in native[0]}}
    return out


def stubbed_tasks(sequential: int = 300, concurrent: int = 2000) -> dict[str, float]:
    """Parsl round trips with a no-op task: per-task latency and tasks/s."""
    from hpc_chat.driver.executors.base import ExecutorConfig
    from hpc_chat.driver.executors.parsl import ParslExecutor
    from hpc_chat.sites.build import get_local_config

    async def go():
        ex = ParslExecutor(ExecutorConfig(max_workers=1),
                           parsl_config=get_local_config(1, label="bench_htex"))
        await ex.initialize()
        try:
            await ex.wait_for_workers(1, timeout=120)
            for i in range(20):
                await ex.submit(noop, i)
            lat = []
            for i in range(sequential):
                t = time.perf_counter()
                await ex.submit(noop, i)
                lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            await asyncio.gather(*(ex.submit(noop, i) for i in range(concurrent)))
            rate = concurrent / (time.perf_counter() - t)
        finally:
            await ex.shutdown()
        lat.sort()
        return {"p50_ms": 1000 * lat[len(lat) // 2], "p95_ms": 1000 * lat[int(len(lat) * 0.95)],
                "tasks_s": rate}

    return asyncio.run(go())


# ----------------------------------------------------------------------------- the suite
THROUGHPUT_CONFIGS = [  # (workers, threads per worker, batch size)
    (1, 2, 1), (2, 1, 1), (1, 2, 8), (1, 2, 16), (2, 1, 8),
]


def run_suite(repeats: int = 3, requests: int = 32, overhead_requests: int = 16,
              slurm: bool = True, log: Callable[[str], None] = print,
              real_requests: int = 64) -> dict[str, Any]:
    from hpc_chat.llm.models import resolve_model

    cores = len(os.sched_getaffinity(0))
    results: dict[str, Any] = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cores": cores, "repeats": repeats,
        "requests": requests, "overhead_requests": overhead_requests,
        "max_tokens": MAX_TOKENS,
        "model_bytes": resolve_model("default").stat().st_size,
        "machine": machine_description()}}
    from hpc_chat.bench.sections import SECTIONS

    for name, section in SECTIONS.items():
        log(section.says)
        results[name] = section.run(repeats, real_requests, log)
    log("1. orchestration overhead")
    direct16 = median_of(repeats, lambda: direct_loop(overhead_requests, 2))
    wf16 = median_of(repeats, lambda: workflow_run(overhead_requests, 1, 2, 1))
    results["overhead"] = {
        "direct": direct16, "workflow": wf16,
        "ratio": wf16["wall_s"] / direct16["wall_s"],
        "per_request_ms": 1000 * (wf16["wall_s"] - direct16["wall_s"]) / overhead_requests,
        "stubbed": median_of(repeats, stubbed_tasks)}
    log("2. throughput")
    direct = median_of(repeats, lambda: direct_loop(requests, 2))
    configs = []
    for workers, threads, batch in THROUGHPUT_CONFIGS:
        log(f"   {workers} worker(s) x {threads} thread(s), batch {batch}")
        r = median_of(repeats, lambda: workflow_run(requests, workers, threads, batch))
        configs.append({"workers": workers, "threads": threads, "batch": batch, **r,
                        "vs_direct": r["tok_s"] / direct["tok_s"]})
    server_bin = os.environ.get("HPC_CHAT_LLAMA_SERVER")
    server = None
    if server_bin and Path(server_bin).is_file():
        log("   llama-server peer")
        server = median_of(repeats, lambda: llama_server_run(server_bin, requests, 2))
    results["throughput"] = {"direct": direct, "configs": configs, "llama_server": server,
                             "llama_batched_bench": None,
                             "llama_server_note": None if server else
                             "not measured: set HPC_CHAT_LLAMA_SERVER to a llama-server binary"}
    best = max(configs, key=lambda c: c["tok_s"])
    log("   profile of batched decoding")
    results["profile"] = batched_profile(requests, 2)
    batched_bin = os.environ.get("HPC_CHAT_LLAMA_BATCHED_BENCH")
    if batched_bin and Path(batched_bin).is_file():
        log("   llama-batched-bench peer")
        # the prompt tokens each request evaluates itself (after the shared system prompt)
        own = max(1, round(results["profile"]["batched"]["prompt_tokens"] / requests))
        runs = [llama_batched_bench_run(batched_bin, own, 2) for _ in range(repeats)]
        results["throughput"]["llama_batched_bench"] = {
            "prompt_tokens": own, "runs": runs,
            "widths": {w: {k: statistics.median(r[w][k] for r in runs) for k in runs[0][w]}
                       for w in runs[0]}}
    results["warm_start"] = {
        "first_latency_s": best["first_latency_s"], "steady_latency_s":
            best["steady_latency_s"], "model_loads_per_worker":
            max(c["model_loads"] / c["workers_seen"] for c in configs)}
    if slurm and slurm_up():
        log("4. scaling on the local Slurm")
        w, t, b = best["workers"], best["threads"], best["batch"]
        on_slurm = median_of(repeats, lambda: workflow_run(requests, w, t, b, "local-slurm"))
        results["slurm"] = {"config": [w, t, b], **on_slurm,
                            "vs_local": on_slurm["tok_s"] / best["tok_s"]}
    else:
        results["slurm"] = None
    results["slurm_2n"] = None
    if slurm and two_nodes_up():
        log("4b. two nodes on the local Slurm (correctness and overhead, not scaling: 2 cores)")
        profile = str(TWO_NODE_PROFILE.resolve())
        two = median_of(repeats, lambda: workflow_run(requests, 1, 1, 4, profile))
        # the same per-node setup (1 worker, 1 thread, one engine) in a 1-node pilot job
        one = median_of(repeats, lambda: workflow_run(requests, 1, 1, 4, "local-slurm"))
        results["slurm_2n"] = {**two, "one_node": one}
    log("5. the physical limit")
    bw = median_of(repeats, copy_bandwidth)
    single = median_of(repeats, lambda: single_stream_generation(2))
    ceiling = bw["gb_s"] * 1e9 / results["meta"]["model_bytes"]
    results["limit"] = {"copy_gb_s": bw["gb_s"], "ceiling_tok_s": ceiling,
                        "single_stream_tok_s": single["tok_s"],
                        "fraction": single["tok_s"] / ceiling}
    return results
