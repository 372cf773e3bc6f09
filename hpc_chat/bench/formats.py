"""The weight-format rows: the embedded model as shipped (Q4_1) and as ``hpc-chat models
convert`` makes it (Q4_0, IQ4_NL), each measured in the same run for speed and quality.

Speed: the plain llama-cpp-python loop (one request at a time, as a user would write it) and
the batched engine with 8 sequences, on the same 64-token requests. Quality: perplexity on a
shipped public-domain text (``declaration.txt``, the United States Declaration of
Independence), in windows of 512 tokens, every token after a window's first scored; lower is
better. And whether the batched engine's greedy answers still equal the unbatched engine's on
that file: the repacked kernels of Q4_0 and IQ4_NL compute one row and four rows differently,
so this is checked, not assumed. The formats run in ABBA order (A B C, C B A, ...), so a
machine whose speed drifts during the row weighs on every format alike.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from hpc_chat.bench.measure import (
    SYSTEM_AGENT,
    abba,
    bench_request,
    direct_loop,
    machine_description,
    median_of,
    prompts,
)

FORMATS = ("q4_1", "q4_0", "iq4_nl")  # the first is the embedded file as shipped
WINDOW = 512
LOOP_REQUESTS = 16
BATCH_REQUESTS = 32


def perplexity(path: Path, threads: int = 2) -> tuple[float, int]:
    """Perplexity of the shipped text under the model at ``path``, and the tokens scored."""
    import llama_cpp
    import numpy as np

    text = resources.files("hpc_chat.bench").joinpath("declaration.txt").read_text()
    llama = llama_cpp.Llama(model_path=str(path), n_ctx=WINDOW, n_batch=WINDOW,
                            logits_all=True, n_threads=threads, n_threads_batch=threads,
                            flash_attn=True, verbose=False)
    tokens = llama.tokenize(text.encode("utf-8"), add_bos=True)
    nll, scored = 0.0, 0
    for start in range(0, len(tokens) - 1, WINDOW):
        window = tokens[start:start + WINDOW]
        if len(window) < 2:
            break
        llama.reset()
        llama.eval(window)
        logits = np.asarray(llama.scores[:len(window)], dtype=np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        targets = np.asarray(window[1:])
        picked = logits[np.arange(len(window) - 1), targets] - log_norm[:-1]
        nll -= float(picked.sum())
        scored += len(targets)
    return math.exp(nll / scored), scored


def batched_run(path: Path, threads: int = 2) -> dict[str, Any]:
    """The batched engine (8 sequences) on the bench requests: tokens/s, and whether 4 greedy
    answers equal the unbatched engine's on this file."""
    from hpc_chat.agents.config import AgentConfig
    from hpc_chat.llm.batched import BatchedEngine
    from hpc_chat.llm.engine import ChatEngine
    from hpc_chat.llm.models import ModelSpec

    agent = AgentConfig.from_yaml(SYSTEM_AGENT).config
    engine = ChatEngine(ModelSpec(path=str(path), n_threads=threads))
    reqs = [bench_request(agent, p, i) for i, p in enumerate(prompts(BATCH_REQUESTS))]
    greedy = [r.model_copy(update={"temperature": 0.0}) for r in reqs[:4]]
    batched = BatchedEngine(engine, 8)
    try:
        start = time.perf_counter()
        done = batched.generate(reqs)
        wall = time.perf_counter() - start
        together = batched.generate(greedy)
    finally:
        batched.close()
    alone = [engine.complete(r) for r in greedy]
    tokens = sum(c.completion_tokens for c in done)
    return {"tok_s": tokens / wall, "wall_s": wall, "tokens": tokens,
            "same_answers": [c.text for c in together] == [c.text for c in alone]}


def formats_workload(repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Each format's speed (loop, batched) and quality, measured in ABBA order."""
    from hpc_chat.llm.convert import convert
    from hpc_chat.llm.models import resolve_model

    source = resolve_model("default")
    runs: dict[str, list[dict]] = {name: [] for name in FORMATS}
    quality: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="hpc_chat_formats_") as tmp:
        files = {"q4_1": source}
        for name in FORMATS[1:]:
            log(f"   converting the embedded model to {name}")
            files[name] = convert(source, name, Path(tmp) / f"model.{name}.gguf").output
        for name in FORMATS:
            ppl, scored = perplexity(files[name])
            quality[name] = {"perplexity": ppl, "scored_tokens": scored,
                             "bytes": files[name].stat().st_size}
        order = abba(list(FORMATS), repeats)
        for i, name in enumerate(order, 1):
            log(f"   format run {i}/{len(order)}: {name}")
            loop = direct_loop(LOOP_REQUESTS, 2, model_path=files[name])
            runs[name].append({"loop_tok_s": loop["tok_s"], **batched_run(files[name])})
    out = {}
    for name in FORMATS:
        done = runs[name]
        summary = median_of(len(done), iter(done).__next__)
        summary["same_answers"] = all(r["same_answers"] for r in done)
        out[name] = {**summary, **quality[name]}
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_description(),
            "cores": len(os.sched_getaffinity(0)), "repeats": repeats, "order": order,
            "loop_requests": LOOP_REQUESTS, "batch_requests": BATCH_REQUESTS, "formats": out}
