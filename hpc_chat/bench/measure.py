"""What the benchmark cases are built from: the prompt set and requests, the plain
llama-cpp-python loop and the batched engine's profile (the baselines every ratio is taken
against), the machine's own limits (copy bandwidth, single-stream generation), and what this
machine has (the local Slurm, its second node).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

MAX_TOKENS = 64
SYSTEM_AGENT = "config/EnhancedCollaborativeAgent_3.yml"


def prompts(n: int) -> list[str]:
    lines = resources.files("hpc_chat.bench").joinpath("prompts.txt").read_text().splitlines()
    return [lines[i % len(lines)] for i in range(n)]


def warm_up_prompts(n: int) -> list[str]:
    """``n`` prompts outside :func:`prompts`' set: a server warmed with them has served, and
    finds none of a timed run's prompts in a cache."""
    return [f"Warm-up {i}: name a colour." for i in range(n)]


def median_of(repeats: int, fn: Callable[[], dict[str, float]]) -> dict[str, Any]:
    """Run ``fn`` ``repeats`` times; the median of each number, and every run kept. A count
    (an int) takes the lower middle run's, so it stays a count with an even number of runs."""
    runs = [fn() for _ in range(repeats)]

    def middle(values: list) -> Any:
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        return statistics.median_low(values) if whole else statistics.median(values)

    return {**{k: middle([r[k] for r in runs]) for k in runs[0]}, "runs": runs}


def abba(peers: list[str], repeats: int) -> list[str]:
    """The order of the runs: the peers forward, then backward, and so on, ``repeats`` runs
    each (A B C, C B A, A B C for three): a machine that drifts during a section weighs on
    every peer alike."""
    order: list[str] = []
    for r in range(repeats):
        order += peers if r % 2 == 0 else peers[::-1]
    return order


def runs_in_abba_order(peers: dict[str, Callable[[], dict[str, Any]]], repeats: int,
                       log: Callable[[str], None], what: str
                       ) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Each peer's run (a call with no arguments) ``repeats`` times in :func:`abba` order,
    each logged as ``what`` run i of n: the order, and every peer's runs in the order made."""
    order = abba(list(peers), repeats)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in peers}
    for i, name in enumerate(order, 1):
        log(f"   {what} run {i}/{len(order)}: {name}")
        runs[name].append(peers[name]())
    return order, runs


def middle_run(done: list[dict], key: str = "tok_s") -> dict[str, Any]:
    """A peer's runs summed up by the one whose ``key`` is nearest their median (so its other
    figures belong together), with the median of ``key``, its range and every run."""
    rates = sorted(r[key] for r in done)
    middle = min(done, key=lambda r: abs(r[key] - statistics.median(rates)))
    return {**middle, key: statistics.median(rates), f"{key}_min": rates[0],
            f"{key}_max": rates[-1], "runs": done}


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


def direct_loop(n: int, threads: int, max_tokens: int | None = MAX_TOKENS,
                model_path: Path | None = None) -> dict[str, Any]:
    """A plain llama-cpp-python loop: what a user would write without hpc_chat (on the
    embedded model, or the file at ``model_path``)."""
    import llama_cpp

    from hpc_chat.agents.config import AgentConfig
    from hpc_chat.llm.models import resolve_model

    agent = AgentConfig.from_yaml(SYSTEM_AGENT).config
    llama = llama_cpp.Llama(model_path=str(model_path or resolve_model("default")), n_ctx=2048,
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
            prof["n_seq"], prof["slots"] = width, engine_b.slots.as_dict()
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


