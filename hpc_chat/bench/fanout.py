"""The demo's small fan-out against llama.cpp's own decoding of the same schedule.

``make demo`` sends 4 prompts, which routing turns into 5 answers of up to 256 tokens from 3
personas, decoded together by the node's engine. hpc_chat runs it as ``make demo`` does
(``hpc-chat batch examples/demo-prompts.jsonl --seed 42``). Its figure is the tokens generated
per second from the first request on a worker to the end of the last answer. The start is
left out here; the real workload's section measures it.

The peer is llama.cpp's ``llama-batched-bench`` (no Python, no scheduling) at 1 to N
sequences, where N is the demo's number of answers, with the demo's median prompt length and
its longest answer. The demo's answers end at different lengths: N sequences run until the
shortest ends, then N - 1, and so on. At each width, llama.cpp's own generation speed gives the
time those tokens take there. Its prompt speed at N sequences gives the time for the prompt
tokens hpc_chat evaluated; neither side is charged for those it found cached (a system prompt
that another answer of the same agent had evaluated). The sum is llama.cpp's time for the
demo's exact schedule, with the same number of sequences at every step; that is the figure
compared. Beside it is llama-batched-bench's plain figure at N sequences, with every answer as
long as the longest: what a fan-out whose answers end together reaches. The runs go in ABBA
order.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from hpc_chat.bench.measure import abba, machine_description, middle_run
from hpc_chat.bench.peers import llama_batched_bench_run

SEED = 42  # make demo's


def demo_file() -> Path | None:
    """``examples/demo-prompts.jsonl`` of the checkout this package runs from (the file
    ``make demo`` sends); None when the package was installed without its checkout."""
    import hpc_chat

    path = Path(hpc_chat.__file__).resolve().parents[1] / "examples" / "demo-prompts.jsonl"
    return path if path.is_file() else None


def demo_run(path: Path) -> dict[str, Any]:
    """``hpc-chat batch`` on the demo's prompts, as ``make demo`` runs it: its wall time, the
    time from launch to the first request on a worker, every answer's tokens (each agent's
    own, from the line's provenance), the prompt tokens it counted and those of them its
    engine found cached (an agent's system prompt evaluated for another of its answers), and
    the tokens/s from the first request on a worker to the last answer's end. A failed line
    fails the run (``hpc-chat batch`` exits 1)."""
    with tempfile.TemporaryDirectory(prefix="hpc_chat_bench_") as tmp:
        out = Path(tmp) / "answers.jsonl"
        launched = time.time()
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "hpc_chat", "batch", str(path), "-o", str(out), "--seed",
             str(SEED)], capture_output=True, text=True, timeout=1800,
            env={**os.environ, "HPC_CHAT_HOME": str(Path(tmp) / "home")})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"hpc-chat batch failed ({done.returncode}): "
                               f"{done.stderr[-600:]}")
        made = [a for line in out.read_text().splitlines()
                for a in json.loads(line)["provenance"]["agents"]]
    answers = sorted(a["usage"]["completion_tokens"] for a in made)
    first, last = min(a["start"] for a in made), max(a["end"] for a in made)
    return {"wall_s": wall, "tokens": sum(answers), "tok_s": sum(answers) / wall,
            "req_s": len(made) / wall, "answers": answers,
            "prompt_tokens": sum(a["usage"]["prompt_tokens"] for a in made),
            "cached_tokens": sum(a["usage"]["cached_tokens"] for a in made),
            "median_prompt_tokens": round(statistics.median(
                a["usage"]["prompt_tokens"] for a in made)),
            "start_s": first - launched, "steady_tok_s": sum(answers) / (last - first)}


def fanout_workload(repeats: int, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The section: the demo against ``llama-batched-bench`` (when
    ``HPC_CHAT_LLAMA_BATCHED_BENCH`` names it), ``repeats`` runs each in ABBA order. The
    first demo run sets the widths and lengths the native runs use; every demo run must give
    as many answers (routing is fixed by the prompts). The native figures are each width's
    median of each number, as the real workload's are. None without the demo's prompts (a
    package installed without its checkout)."""
    path = demo_file()
    if path is None:
        log("   the demo's prompts are not here (examples/ of a checkout): skipped")
        return None
    binary = os.environ.get("HPC_CHAT_LLAMA_BATCHED_BENCH")
    peers = ["hpc_chat"] + (["llama_batched_bench"] if binary and Path(binary).is_file()
                            else [])
    runs: dict[str, list[dict]] = {name: [] for name in peers}
    order = abba(peers, repeats)
    for i, name in enumerate(order, 1):
        log(f"   fan-out run {i}/{len(order)}: {name}")
        if name == "hpc_chat":
            runs[name].append(demo_run(path))
            continue
        first = runs["hpc_chat"][0]
        width = len(first["answers"])
        native = llama_batched_bench_run(binary, first["median_prompt_tokens"],
                                         len(os.sched_getaffinity(0)),
                                         tuple(range(1, width + 1)), max(first["answers"]))
        runs[name].append({str(w): native[str(w)] for w in range(1, width + 1)})
    if len({len(r["answers"]) for r in runs["hpc_chat"]}) != 1:
        raise RuntimeError("the demo's runs gave different numbers of answers: "
                           f"{[r['answers'] for r in runs['hpc_chat']]}")
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"),
                           "machine": machine_description(),
                           "cores": len(os.sched_getaffinity(0)), "repeats": repeats,
                           "order": order, "prompts": len(path.read_text().splitlines()),
                           "hpc_chat": middle_run(runs["hpc_chat"], "steady_tok_s"),
                           "llama_batched_bench": None}
    if "llama_batched_bench" in runs:
        first = runs["hpc_chat"][0]
        native = runs["llama_batched_bench"]
        out["llama_batched_bench"] = {
            "prompt_tokens": first["median_prompt_tokens"],
            "generated_tokens": max(first["answers"]), "runs": native,
            "widths": {int(w): {k: statistics.median(r[w][k] for r in native)
                                for k in native[0][w]} for w in native[0]}}
    return out
