"""Requests sent the way a user's clients send them, to ``hpc-chat serve`` and to llama.cpp's
own ``llama-server`` (same model file, same requests, same run), and llama.cpp's
``llama-batched-bench``, the ceiling with no Python at all.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TypeVar

from hpc_chat.bench.measure import MAX_TOKENS, SYSTEM_AGENT, bench_request, prompts


def post_chat(url: str, headers: dict, body: dict, timeout: float = 600) -> dict:
    """One chat completion from an OpenAI-compatible ``url``: its JSON answer."""
    request = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.load(resp)


def timed_map(fn, items: list, clients: int) -> tuple[list, float]:
    """``fn`` over ``items``, ``clients`` at a time (threads): the results in order, and the
    wall time of the whole."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(fn, items))
    return done, time.perf_counter() - start


def _clients_run(url: str, headers: dict, n: int, clients: int, body, max_tokens) -> dict:
    """``n`` bench requests to an OpenAI-compatible ``url``, ``clients`` at a time (threads);
    ``body(request)`` is the JSON each server takes. The servers' own per-request ``timings``
    (llama-server has them) are kept as a cross-check of the client's clock."""
    from hpc_chat.agents.config import AgentConfig

    agent = AgentConfig.from_yaml(SYSTEM_AGENT).config

    def ask(i_prompt):
        i, prompt = i_prompt
        done = post_chat(url, headers, body(bench_request(agent, prompt, i, max_tokens)))
        return done["usage"]["completion_tokens"], done.get("timings") or {}

    answers, wall = timed_map(ask, list(enumerate(prompts(n))), clients)
    tokens = sum(t for t, _ in answers)
    own = [t.get("predicted_per_second") for _, t in answers if t.get("predicted_per_second")]
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, "req_s": n / wall,
            "server_per_request_tok_s": statistics.median(own) if own else 0.0}


@contextmanager
def serving(homes: list[str] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """``hpc-chat serve`` (packaged defaults, local site) in a home of its own, once its
    ``/health`` answers (a worker has started): its URL and the headers that carry its key;
    stopped at the end. A caller that times it sends one request first (the engine's load).
    Its home (every path of its run is under it) is appended to ``homes`` when given."""
    import sys

    with tempfile.TemporaryDirectory(prefix="hpc_chat_bench_") as home:
        env = {**os.environ, "HPC_CHAT_HOME": home}
        proc = subprocess.Popen([sys.executable, "-m", "hpc_chat", "serve", "--port", "0"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if homes is not None:
            homes.append(home)
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
            yield url, {"Authorization": f"Bearer {key}"}
        finally:
            proc.terminate()
            proc.wait(timeout=120)


@contextmanager
def llama_server(binary: str, threads: int, slots: int, *extra: str,
                 port: int = 18181) -> Iterator[str]:
    """llama.cpp's own server on the same model file, flash attention on (as in hpc_chat's
    engines), with ``slots`` parallel slots: its base URL once it answers; stopped at the end."""
    from hpc_chat.llm.models import resolve_model

    command = [binary, "-m", str(resolve_model("default")), "-c", str(2048 * slots), "-np",
               str(slots), "-t", str(threads), "-fa", "on", "--port", str(port), "--host",
               "127.0.0.1", *extra]
    try:  # a server left on the port would answer for this one
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
        raise RuntimeError(f"port {port} is taken by another server: stop it first")
    except OSError:
        pass
    with tempfile.TemporaryFile() as log:  # its own log: a pipe left unread would stall it
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        tail = log.read().decode(errors="replace").strip()[-600:]
                        what = "did not answer on /health in 120 s" if proc.poll() is None \
                            else f"exited with {proc.returncode}"
                        raise RuntimeError(f"{' '.join(command[:1] + command[3:])} {what}: "
                                           f"{tail or 'no output'}") from None
                    time.sleep(0.5)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


T = TypeVar("T")


def on_fresh_llama_server(binary: str, threads: int, slots: int,
                          run: Callable[[str], T]) -> T:
    """``run(url)`` on a llama-server started for it and stopped after it, its start not
    timed: for sections whose repeats send the same prompts (the same seeds too), as each
    ``hpc-chat batch`` run starts a fresh engine. One server kept across repeats keeps every
    earlier prompt in its prompt cache (``--cache-ram``, 8 GiB by default) and evaluates it
    no more: 16 prompts' ``synthesize`` pattern sent twice to one server evaluated 9,259
    prompt tokens the first time and 4,321 the second (of about 14,000 counted each time),
    and ran 21% faster (Intel Xeon, 2 cores, 2026-12-06)."""
    with llama_server(binary, threads, slots) as url:
        return run(url)


@contextmanager
def llama_server_peer(binary: str, threads: int, slots: int, *extra: str,
                      port: int) -> Iterator[tuple[str, dict]]:
    """:func:`llama_server` as a peer, in the shape :func:`serving` has: its base URL and
    the (no) headers its requests carry."""
    with llama_server(binary, threads, slots, *extra, port=port) as base:
        yield base, {}


def serve_run(n: int, clients: int, max_tokens: int | None = None) -> dict[str, float]:
    """``hpc-chat serve`` answering ``n`` requests from ``clients`` concurrent clients, timed
    from the first request (the server is up and warm, as llama-server is in its row): the
    same requests as the peers, the agent's system prompt sent in the messages."""
    with serving() as (url, headers):
        return _clients_run(url, headers, n, clients,
                            lambda req: {"model": "balanced_agent", "messages": req.messages,
                                         "temperature": req.temperature, "top_p": req.top_p,
                                         "seed": req.seed, "max_tokens": req.max_tokens},
                            max_tokens)


def llama_server_run(binary: str, n: int, threads: int, slots: int = 8,
                     max_tokens: int | None = MAX_TOKENS,
                     extra: dict[str, Any] | None = None) -> dict[str, float]:
    """llama.cpp's own server with parallel slots and continuous batching, as a peer: the
    same requests ``slots`` at a time, each body with ``extra`` (a ``response_format``, say)
    added."""
    with llama_server(binary, threads, slots) as url:
        return _clients_run(url, {}, n, slots,
                            lambda req: {"messages": req.messages, **req.sampling(),
                                         **(extra or {})},
                            max_tokens)


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


