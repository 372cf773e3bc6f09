"""Embedding a corpus: ``hpc-chat serve``'s ``/v1/embeddings`` beside ``llama-server
--embedding`` with the same model file, the same inputs and the same clients, in one run.

The inputs are the shipped prompts, each made distinct (``(i)`` appended), sent
:data:`PER_REQUEST` to a request by :data:`CLIENTS` concurrent clients, as a corpus script
sends them. Both servers are up with the model loaded before the clock starts (one request
each first), both pool by the mean of the token states (``--pooling mean``: what hpc_chat
does for a generative model), and both can put a whole request's inputs in one decode:
llama-server gets :data:`PER_REQUEST` slots (it takes one input per slot), as hpc_chat's
embedding context takes up to 32 inputs per decode. Reported: inputs/s and prompt tokens/s
(each server's own ``usage.prompt_tokens``). ``hpc-chat bench --only embeddings`` measures
this section alone into an existing results file.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from hpc_chat.bench.measure import machine_description, median_of, prompts
from hpc_chat.bench.peers import llama_server, serving, timed_map

EMBED_INPUTS = 512
PER_REQUEST = 32
CLIENTS = 4
AGENT = "balanced_agent"


def corpus(n: int) -> list[str]:
    return [f"{line} ({i})" for i, line in enumerate(prompts(n))]


def embed_run(url: str, headers: dict[str, str], inputs: list[str],
              model: str | None) -> dict[str, Any]:
    """``inputs`` embedded through ``url``'s ``/embeddings``, :data:`PER_REQUEST` to a request,
    :data:`CLIENTS` requests at a time; checks every vector came back."""
    def ask(chunk: list[str]) -> tuple[int, int]:
        body = {"input": chunk, **({"model": model} if model else {})}
        request = urllib.request.Request(f"{url}/embeddings", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json",
                                                  **headers})
        with urllib.request.urlopen(request, timeout=600) as resp:
            done = json.load(resp)
        if len(done["data"]) != len(chunk):
            raise RuntimeError(f"{url}: {len(done['data'])} vectors for {len(chunk)} inputs")
        return done["usage"]["prompt_tokens"], len(done["data"][0]["embedding"])

    ask(inputs[:1])  # the model is loaded and the engine warm before the clock starts
    chunks = [inputs[i:i + PER_REQUEST] for i in range(0, len(inputs), PER_REQUEST)]
    answers, wall = timed_map(ask, chunks, CLIENTS)
    tokens = sum(t for t, _ in answers)
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall,
            "req_s": len(chunks) / wall, "inputs_s": len(inputs) / wall,
            "dimensions": answers[0][1]}


def embedding_workload(n: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    inputs = corpus(n)
    cores = len(os.sched_getaffinity(0))
    out: dict[str, Any] = {"inputs": n, "per_request": PER_REQUEST, "clients": CLIENTS,
                           "agent": AGENT, "repeats": repeats, "cores": cores,
                           "llama_server_slots": PER_REQUEST,
                           "date": time.strftime("%Y-%m-%d %H:%M"),
                           "machine": machine_description(), "llama_server": None}
    log(f"   hpc-chat serve /v1/embeddings, {n} inputs")
    with serving() as (url, headers):
        out["hpc_chat"] = median_of(repeats, lambda: embed_run(url, headers, inputs, AGENT))
    log(f"     {out['hpc_chat']['inputs_s']:.1f} inputs/s")
    binary = os.environ.get("HPC_CHAT_LLAMA_SERVER")
    if binary and Path(binary).is_file():
        log(f"   llama-server --embedding --pooling mean -np {PER_REQUEST}, {n} inputs")
        with llama_server(binary, cores, PER_REQUEST, "--embedding", "--pooling", "mean",
                          port=18182) as url:
            out["llama_server"] = median_of(repeats, lambda: embed_run(url, {}, inputs, None))
        log(f"     {out['llama_server']['inputs_s']:.1f} inputs/s")
    return out
