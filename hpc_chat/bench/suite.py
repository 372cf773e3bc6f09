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
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Callable

MAX_TOKENS = 64
SYSTEM_AGENT = "config/EnhancedCollaborativeAgent_3.yml"


def prompts(n: int) -> list[str]:
    lines = resources.files("hpc_chat.bench").joinpath("prompts.txt").read_text().splitlines()
    return [lines[i % len(lines)] for i in range(n)]


def median_of(repeats: int, fn: Callable[[], dict[str, float]]) -> dict[str, Any]:
    """Run ``fn`` ``repeats`` times; the median of each number, and every run kept."""
    runs = [fn() for _ in range(repeats)]
    return {**{k: statistics.median(r[k] for r in runs) for k in runs[0]}, "runs": runs}


def chat_messages(agent, prompt: str) -> list[dict[str, str]]:
    """The one request every case sends: the agent's system prompt, then the prompt."""
    return [{"role": "system", "content": agent.system_prompt},
            {"role": "user", "content": prompt}]


def bench_request(agent, prompt: str, seed: int, max_tokens: int | None = MAX_TOKENS):
    """The request every case computes: the agent's own sampling, ``max_tokens`` (None: the
    agent's own, as the real workload has it), a seed."""
    from hpc_chat.protocol.request import GenRequest

    sampling = {**agent.sampling(), "seed": seed}
    if max_tokens is not None:
        sampling["max_tokens"] = max_tokens
    return GenRequest(messages=chat_messages(agent, prompt), **sampling)


def noop(x):
    """The stubbed task: Parsl's cost with no inference at all."""
    return x


# ----------------------------------------------------------------------------- baselines
def direct_loop(n: int, threads: int, max_tokens: int | None = MAX_TOKENS) -> dict[str, Any]:
    """A plain llama-cpp-python loop: what a user would write without hpc_chat."""
    import llama_cpp

    from hpc_chat.agents.config import AgentConfig
    from hpc_chat.llm.models import resolve_model

    agent = AgentConfig.from_yaml(SYSTEM_AGENT).config
    llama = llama_cpp.Llama(model_path=str(resolve_model("default")), n_ctx=2048,
                            n_threads=threads, n_threads_batch=threads, flash_attn=True,
                            verbose=False)
    start = time.perf_counter()
    lengths = []
    for i, prompt in enumerate(prompts(n)):
        req = bench_request(agent, prompt, i, max_tokens)
        out = llama.create_chat_completion(messages=req.messages, **req.sampling())
        lengths.append(out["usage"]["completion_tokens"])
    wall = time.perf_counter() - start
    tokens = sum(lengths)
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, "req_s": n / wall,
            "median_answer_tokens": statistics.median(lengths)}


def batched_profile(n: int, threads: int, n_seq: int = 8) -> dict[str, Any]:
    """The batched engine alone (no Parsl) on the same requests, with its decode profile; and
    the same engine with one sequence, for the cost of a token decoded alone."""
    from hpc_chat.agents.config import AgentConfig
    from hpc_chat.llm.batched import BatchedEngine
    from hpc_chat.llm.engine import ChatEngine
    from hpc_chat.llm.models import ModelSpec, resolve_model

    agent = AgentConfig.from_yaml(SYSTEM_AGENT).config
    engine = ChatEngine(ModelSpec(path=str(resolve_model("default")), n_threads=threads))
    reqs = [bench_request(agent, p, i) for i, p in enumerate(prompts(n))]
    out = {}
    for label, width, batch in (("batched", n_seq, reqs), ("single", 1, reqs[:8])):
        engine_b = BatchedEngine(engine, width)
        try:
            done = engine_b.generate(batch)
            prof = engine_b.profile.as_dict()
            prof["n_seq"] = width
            prof["tok_s"] = sum(c.completion_tokens for c in done) / prof["wall_s"]
            out[label] = prof
        finally:
            engine_b.close()
    return out


def single_stream_generation(threads: int) -> dict[str, float]:
    """Pure decode speed of one sequence (llama.cpp's own eval counters, prompt excluded)."""
    import llama_cpp

    from hpc_chat.llm.models import resolve_model

    llama = llama_cpp.Llama(model_path=str(resolve_model("default")), n_ctx=2048,
                            n_threads=threads, n_threads_batch=threads, flash_attn=True,
                            verbose=False)
    llama.create_completion("Once upon a time", max_tokens=128, temperature=0.0)
    perf = llama_cpp.llama_perf_context(llama.ctx)
    return {"tok_s": perf.n_eval / (perf.t_eval_ms / 1000.0), "n_eval": perf.n_eval}


def copy_bandwidth(size_mb: int = 256) -> dict[str, float]:
    """Bytes copied per second by numpy (each byte read once and written once)."""
    import numpy as np

    src = np.ones(size_mb * 1024 * 1024 // 8)
    dst = np.empty_like(src)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    return {"gb_s": src.nbytes / min(times) / 1e9}


# ----------------------------------------------------------------------------- workflow runs
def write_configs(tmp: Path, workers: int, threads: int, batch: int,
                  site: str = "local") -> tuple[str, str]:
    """A workflow YAML and a site profile for one configuration."""
    profile = tmp / f"bench-{Path(site).stem}-{workers}x{threads}.yaml"  # a name, or a path
    cores = len(os.sched_getaffinity(0))
    if site == "local":
        profile.write_text(f"""name: bench-local
provider: {{type: LocalProvider, init_blocks: 1, min_blocks: 1, max_blocks: 1}}
executor:
  address: 127.0.0.1
  max_workers_per_node: {workers}
  cores_per_worker: {cores / workers}
model: {{n_threads: {threads}}}
""")
    else:
        from hpc_chat.sites.registry import load_profile

        base = load_profile(site)
        data = base.model_dump(exclude_none=True)
        data["name"] = "bench-slurm"
        data["executor"]["max_workers_per_node"] = workers
        data["model"]["n_threads"] = threads
        import yaml
        profile.write_text(yaml.safe_dump(data))
    workflow = tmp / f"bench-{workers}x{threads}-b{batch}.yml"
    workflow.write_text(f"""name: bench
config:
  executor: {{type: parsl, max_workers: {workers}, timeout: 300}}
  agents:
    - {{name: balanced_agent, config_file: "{SYSTEM_AGENT}"}}
  data_units: {{conversation_history: {{type: memory}}}}
  performance: {{batch_size: {batch}, timeout_seconds: 600}}
  generation: {{max_tokens: {MAX_TOKENS}}}
""")
    return str(workflow), str(profile)


async def _workflow_run(workflow: str, profile: str, n: int, workers: int) -> dict[str, Any]:
    from hpc_chat.workflow import ParslChatWorkflow

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


def hpc_chat_batch_run(n: int, agent_name: str = "balanced_agent") -> dict[str, Any]:
    """``hpc-chat batch`` with the packaged defaults, end to end, as a user runs it: a fresh
    process, the local site's workers and the node engine started, the model loaded, every
    answer written. The requests are an OpenAI batch file (so each line carries its seed, as
    the peers' requests do) to ``agent_name`` with its own settings; ``start_s`` is the time
    from launch until the first request began on a worker."""
    import sys

    with tempfile.TemporaryDirectory(prefix="hpc_chat_bench_") as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps({
            "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": agent_name, "seed": i,
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
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, "req_s": n / wall,
            "start_s": first - launched, "steady_tok_s": tokens / (wall - (first - launched)),
            "median_answer_tokens": statistics.median(lengths),
            "min_answer_tokens": min(lengths), "max_answer_tokens": max(lengths),
            "engines": len({(a["engine"] or {}).get("pid") for a in agents})}


async def _first_token(wf, repeats: int = 5) -> float:
    """The median time from submitting a request to its first streamed text, warm workers."""
    from hpc_chat.tokenstream import TokenHub

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
    from hpc_chat.workflow import ParslChatWorkflow

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
    ``n`` requests, against its peers in the same run on the same requests."""
    from hpc_chat.agents.config import AgentConfig

    agent = AgentConfig.from_yaml(SYSTEM_AGENT)
    out: dict[str, Any] = {"requests": n, "agent": agent.name,
                           "max_tokens": agent.config.max_tokens}
    log(f"   hpc-chat batch, packaged defaults, {n} requests")
    out["hpc_chat"] = median_of(repeats, lambda: hpc_chat_batch_run(n, agent.name))
    log("   plain llama-cpp-python loop (every core)")
    cores = len(os.sched_getaffinity(0))
    out["direct"] = median_of(repeats, lambda: direct_loop(n, cores, max_tokens=None))
    log("   first streamed token, warm workers")
    out["first_token"] = median_of(repeats, first_token_run)
    servers = {}
    server_bin = os.environ.get("HPC_CHAT_LLAMA_SERVER")
    if server_bin and Path(server_bin).is_file():
        for slots in (8, 16):
            log(f"   llama-server -np {slots}")
            servers[str(slots)] = median_of(repeats, lambda: llama_server_run(
                server_bin, n, cores, slots, max_tokens=None))
    out["llama_server"] = servers
    served = {}
    for clients in (8, 16):
        log(f"   hpc-chat serve, {clients} concurrent clients")
        served[str(clients)] = median_of(repeats, lambda: serve_run(n, clients))
    out["hpc_chat_serve"] = served
    batched_bin = os.environ.get("HPC_CHAT_LLAMA_BATCHED_BENCH")
    out["llama_batched_bench"] = None
    if batched_bin and Path(batched_bin).is_file():
        log("   llama-batched-bench at the workload's median answer length")
        gen = max(1, round(out["hpc_chat"]["median_answer_tokens"]))
        runs = [llama_batched_bench_run(batched_bin, 24, cores, (1, 8, 16), generate=gen)
                for _ in range(repeats)]
        out["llama_batched_bench"] = {
            "prompt_tokens": 24, "generated_tokens": gen, "runs": runs,
            "widths": {w: {k: statistics.median(r[w][k] for r in runs) for k in runs[0][w]}
                       for w in runs[0]}}
    return out


def stubbed_tasks(sequential: int = 300, concurrent: int = 2000) -> dict[str, float]:
    """Parsl round trips with a no-op task: per-task latency and tasks/s."""
    from hpc_chat.executors.base import ExecutorConfig
    from hpc_chat.executors.parsl import ParslExecutor
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


# ----------------------------------------------------------------------------- llama-server
def _clients_run(url: str, headers: dict, n: int, clients: int, body, max_tokens) -> dict:
    """``n`` bench requests to an OpenAI-compatible ``url``, ``clients`` at a time (threads);
    ``body(request)`` is the JSON each server takes. The servers' own per-request ``timings``
    (llama-server has them) are kept as a cross-check of the client's clock."""
    from hpc_chat.agents.config import AgentConfig

    agent = AgentConfig.from_yaml(SYSTEM_AGENT).config

    def ask(i_prompt):
        i, prompt = i_prompt
        request = urllib.request.Request(
            f"{url}/chat/completions",
            data=json.dumps(body(bench_request(agent, prompt, i, max_tokens))).encode(),
            headers={"Content-Type": "application/json", **headers})
        with urllib.request.urlopen(request, timeout=600) as resp:
            done = json.load(resp)
            return done["usage"]["completion_tokens"], done.get("timings") or {}

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(ask, enumerate(prompts(n))))
    wall = time.perf_counter() - start
    tokens = sum(t for t, _ in answers)
    own = [t.get("predicted_per_second") for _, t in answers if t.get("predicted_per_second")]
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, "req_s": n / wall,
            "server_per_request_tok_s": statistics.median(own) if own else 0.0}


def serve_run(n: int, clients: int, max_tokens: int | None = None) -> dict[str, float]:
    """``hpc-chat serve`` (packaged defaults, local site) answering ``n`` requests from
    ``clients`` concurrent clients, timed from the first request (the server is up and warm,
    as llama-server is in its row): the same requests as the peers, the agent's system prompt
    sent in the messages."""
    import sys

    with tempfile.TemporaryDirectory(prefix="hpc_chat_bench_") as home:
        env = {**os.environ, "HPC_CHAT_HOME": home}
        proc = subprocess.Popen([sys.executable, "-m", "hpc_chat", "serve", "--port", "0"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            info = Path(home) / "server" / "server.json"
            deadline = time.monotonic() + 300
            while not info.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("hpc-chat serve did not start")
                time.sleep(0.2)
            url = json.loads(info.read_text())["url"]
            key = (Path(home) / "server" / "api-key").read_text().strip()
            while True:
                try:
                    urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=5)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("hpc-chat serve never became ready") from None
                    time.sleep(0.5)
            return _clients_run(url, {"Authorization": f"Bearer {key}"}, n, clients,
                                lambda req: {"model": "balanced_agent",
                                             "messages": req.messages,
                                             "temperature": req.temperature,
                                             "top_p": req.top_p, "seed": req.seed,
                                             "max_tokens": req.max_tokens}, max_tokens)
        finally:
            proc.terminate()
            proc.wait(timeout=120)


def llama_server_run(binary: str, n: int, threads: int, slots: int = 8,
                     max_tokens: int | None = MAX_TOKENS) -> dict[str, float]:
    """llama.cpp's own server with parallel slots and continuous batching, as a peer: flash
    attention on (as in hpc_chat's engines), the same requests ``slots`` at a time."""
    from hpc_chat.llm.models import resolve_model

    port = 18181
    proc = subprocess.Popen([binary, "-m", str(resolve_model("default")), "-c",
                             str(2048 * slots), "-np", str(slots), "-t", str(threads),
                             "-fa", "on", "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        return _clients_run(f"http://127.0.0.1:{port}/v1", {}, n, slots,
                            lambda req: {"messages": req.messages, **req.sampling()},
                            max_tokens)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def llama_batched_bench_run(binary: str, prompt_tokens: int, threads: int,
                            widths: tuple[int, ...] = (1, 8, 16),
                            generate: int = MAX_TOKENS) -> dict[str, Any]:
    """llama.cpp's own batched decoding with no Python at all (``llama-batched-bench``): each
    of B sequences evaluates a prompt of ``prompt_tokens`` and generates 64 tokens."""
    from hpc_chat.llm.models import resolve_model

    out = subprocess.run(
        [binary, "-m", str(resolve_model("default")), "-c", str(2048 * max(widths)),
         "-b", "2048", "-ub", "512", "-npp", str(prompt_tokens), "-ntg", str(generate),
         "-npl", ",".join(map(str, widths)), "-t", str(threads), "-fa", "on",
         "--output-format", "jsonl"], capture_output=True, text=True, timeout=900)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not rows:
        raise RuntimeError(f"{binary} failed: {out.stderr[-400:]}")
    return {str(r["pl"]): {"tg_tok_s": r["speed_tg"], "pp_tok_s": r["speed_pp"],
                           "tok_s": r["pl"] * r["tg"] / r["t"]} for r in rows}


def machine_description() -> str:
    """The CPU model and host the figures were measured on (for the report and the plot)."""
    import platform
    import socket

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} (host {socket.gethostname()})"


TWO_NODE_PROFILE = Path("tests/fixtures/sites/local-slurm-2n.yaml")  # in an hpc_chat checkout


def two_nodes_up() -> bool:
    """``scripts/local-slurm.sh up --nodes 2`` has run: partition ``multi`` has 2 usable nodes
    (and this is a checkout, which has the profile)."""
    if not (shutil.which("sinfo") and TWO_NODE_PROFILE.is_file()):
        return False
    out = subprocess.run(["sinfo", "-h", "-N", "-p", "multi", "-o", "%T"], capture_output=True,
                         text=True)
    states = out.stdout.split()
    return out.returncode == 0 and len(states) == 2 and all(  # completing: a job just ended
        s.startswith(("idle", "mixed", "allocated", "completing")) for s in states)


def slurm_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and any(s.startswith(("idle", "mixed", "allocated"))
                                       for s in out.stdout.split())


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
    log("the real workload")
    results["real"] = real_workload(real_requests, repeats, log)
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
