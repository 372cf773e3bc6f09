"""The real workload on warm servers with answers of equal length: a comparison that cannot
flatter us.

With answers of natural length, two engines draw different tokens and stop at different
places, so one may simply have written less. Here every peer answers the real workload's
prompts with ``ignore_eos`` and each request's ``max_tokens`` set to its natural length (the
lengths of a first, natural pass through ``hpc-chat serve``, one per prompt): every peer
generates the same number of tokens for the same prompts, and the prompt tokens each peer
counted are reported beside it, so a difference in the prompts shows.

The peers are warm ``hpc-chat serve`` (packaged defaults) and llama.cpp's own ``llama-server``
on the same model file with 8, 16 and 32 slots, and with 8 slots and a unified KV cache (``-kvu``).
Each is sent the requests two ways: all at once (open loop, as a queue of work arrives) and by
8 clients that each wait for their answer. The runs go in ABBA order over every (peer, way)
pair, each repeat with its own seeds (serve would answer a repeated request from its cache).
Each run has a peer of its own, started for it and warmed with requests whose prompts are
not in the set (:func:`warm_requests`), its start not timed: the repeats send the same
prompts, and a server kept across them would find them in its prompt cache (llama-server's
``--cache-ram`` keeps every prompt it has seen, 8 GiB by default); so would one warmed with
the set's own prompts. What a peer reuses within a run (the prompt set repeats after 36
lines) is its own.
llama-server's ``/metrics`` give its busy slots per decode; the node engines' status gives ours
(sequences generating per decode call) and llama.cpp's passes over the weights per call.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any, Callable

from hpc_chat.bench.measure import (
    SYSTEM_AGENT,
    abba,
    bench_request,
    machine_description,
    middle_run,
    prompts,
    warm_up_prompts,
)
from hpc_chat.bench.peers import llama_server_peer, post_chat, serving, timed_map

CLIENTS = 8
SERVERS = {"llama_server_8": (8,), "llama_server_16": (16,), "llama_server_32": (32,),
           "llama_server_8_kvu": (8, "-kvu")}


def _requests(n: int, seed_base: int, lengths: list[int] | None) -> list[Any]:
    from hpc_chat.agents.config import AgentConfig

    agent = AgentConfig.from_yaml(SYSTEM_AGENT).config
    return [bench_request(agent, p, seed_base + i, lengths[i] if lengths else None)
            for i, p in enumerate(prompts(n))]


def warm_requests(n: int) -> list[Any]:
    """``n`` requests of 8 tokens with the agent's system prompt and messages outside the
    prompt set: a started peer has its model loaded, its slots used once and its agent's
    system prompt seen, as on a server that has been serving, and none of the set's prompts
    in a cache."""
    from hpc_chat.agents.config import AgentConfig

    agent = AgentConfig.from_yaml(SYSTEM_AGENT).config
    return [bench_request(agent, prompt, 800_000 + i, 8)
            for i, prompt in enumerate(warm_up_prompts(n))]


def _serve_body(req, equal: bool) -> dict:
    return {"model": "balanced_agent", "messages": req.messages, **req.sampling(),
            **({"ignore_eos": True} if equal else {})}


def _server_body(req, equal: bool) -> dict:
    return {"messages": req.messages, **req.sampling(), **({"ignore_eos": True} if equal else {})}


def send(url: str, headers: dict, bodies: list[dict], clients: int) -> dict[str, Any]:
    """Every body to ``url``, ``clients`` at a time: wall time, tokens generated and the
    prompt tokens the server counted, and each answer's length in request order."""
    def ask(body: dict) -> tuple[int, int]:
        usage = post_chat(url, headers, body, timeout=900)["usage"]
        return usage["completion_tokens"], usage["prompt_tokens"]

    done, wall = timed_map(ask, bodies, clients)
    tokens = sum(c for c, _ in done)
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall,
            "req_s": len(bodies) / wall, "prompt_tokens": sum(p for _, p in done),
            "lengths": [c for c, _ in done]}


def engine_counters(home: str) -> tuple[int, int, int] | None:
    """The decode calls, passes over the weights and generated tokens so far of the node
    engines of the worker pools run from ``home`` (a socket is named after its pool); None
    when no such engine answers (then nothing is reported, rather than zeros)."""
    from multiprocessing.connection import Client

    from hpc_chat.protocol.engine import EngineStatus, Op, Order, encode
    from hpc_chat.util.rundir import runtime_dir

    pools = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if any(b"process_worker_pool" in w for w in words) and \
                any(w.startswith(f"--logdir={home}/".encode()) for w in words):
            pools.append(cmdline.parent.name)
    steps = passes = generated = engines = 0
    for pool in pools:
        for sock in runtime_dir().glob(f"engine-*-{pool}-*.sock"):
            try:
                with Client(str(sock), family="AF_UNIX") as conn:
                    conn.send_bytes(encode(Order(op=Op.STATUS)))
                    status = EngineStatus.model_validate_json(conn.recv_bytes())
            except (OSError, EOFError):
                continue  # an engine that ended: not counted
            steps, passes = steps + status.steps, passes + status.passes
            generated, engines = generated + status.generated, engines + 1
    return (steps, passes, generated) if engines else None


def busy_slots(base: str) -> tuple[float, float] | None:
    """llama-server's decode calls so far and busy slots over them (``--metrics``); None when
    its build reports neither."""
    with urllib.request.urlopen(base.removesuffix("/v1") + "/metrics", timeout=10) as resp:
        return parse_metrics(resp.read().decode())


def parse_metrics(text: str) -> tuple[float, float] | None:
    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                  if line.startswith("llamacpp:"))
    if "llamacpp:n_decode_total" not in values or \
            "llamacpp:n_busy_slots_per_decode" not in values:
        return None
    decodes = float(values["llamacpp:n_decode_total"])
    return decodes, decodes * float(values["llamacpp:n_busy_slots_per_decode"])


def per_decode(before: tuple | None, after: tuple | None, ours: bool) -> dict[str, float]:
    """What a run adds to the counters, per decode call: for hpc_chat's engines
    ``(steps, passes, generated)``, sequences generating and passes per call; for
    llama-server's ``(decodes, busy slots)``, busy slots per call."""
    if before is None or after is None or after[0] <= before[0]:
        return {}
    calls = after[0] - before[0]
    if ours:
        return {"busy_slots_per_decode": (after[2] - before[2]) / calls,
                "passes_per_decode": (after[1] - before[1]) / calls}
    return {"busy_slots_per_decode": (after[1] - before[1]) / calls}


def equal_workload(n: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The section: hpc-chat serve against each llama-server configuration of
    :data:`SERVERS` (when ``HPC_CHAT_LLAMA_SERVER`` names its binary), both ways, each run on
    a peer started for it."""
    binary = os.environ.get("HPC_CHAT_LLAMA_SERVER")
    cores, version = len(os.sched_getaffinity(0)), ""
    homes: list[str] = []  # each hpc-chat serve's home, the latest last
    starts: dict[str, Callable[[], AbstractContextManager[tuple[str, dict]]]] = {
        "hpc_chat": partial(serving, homes)}
    bodies: dict[str, Callable] = {"hpc_chat": _serve_body}
    if not (binary and os.path.isfile(binary)):
        log("   HPC_CHAT_LLAMA_SERVER names no llama-server binary: hpc-chat serve alone, "
            "no comparison (make llama-tools builds one)")
    else:
        version = server_version(binary)  # before the runs: a failure here loses none
        for i, (name, (slots, *extra)) in enumerate(SERVERS.items()):
            starts[name] = partial(llama_server_peer, binary, cores, slots, "--metrics",
                                   *extra, port=18400 + i)
            bodies[name] = _server_body
    log("   natural answer lengths: one pass through hpc-chat serve")
    with serving(homes) as (url, headers):
        natural = send(url, headers, [_serve_body(r, False) for r in _requests(n, 0, None)], n)
    lengths = [max(1, length) for length in natural["lengths"]]
    ways = {"open": n, "clients": CLIENTS}
    order = abba([f"{peer}/{way}" for peer in starts for way in ways], repeats)
    runs: dict[str, list[dict]] = {key: [] for key in order}
    sent = dict.fromkeys(starts, 0)  # a peer's k-th run has the k-th seeds, whichever way
    for i, key in enumerate(order, 1):
        log(f"   equal lengths run {i}/{len(order)}: {key}")
        peer, way = key.split("/")
        body = bodies[peer]
        sent[peer] += 1
        seeds = sent[peer] * max(1000, n)  # no seed twice to one peer
        timed = [body(r, True) for r in _requests(n, seeds, lengths)]
        ours = peer == "hpc_chat"
        with starts[peer]() as (base, hdrs):
            send(base, hdrs, [body(r, True) for r in warm_requests(n)], n)
            before = engine_counters(homes[-1]) if ours else busy_slots(base)
            done = send(base, hdrs, timed, ways[way])
            after = engine_counters(homes[-1]) if ours else busy_slots(base)
        done.update(per_decode(before, after, ours))
        done["lengths_match"] = done.pop("lengths") == lengths  # each answer, in order
        runs[key].append(done)

    import llama_cpp

    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_description(),
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "server_version": version,
            "cores": cores, "requests": n, "repeats": repeats, "clients": CLIENTS,
            "order": order, "lengths": lengths, "fresh_peers": True, "natural": {
                k: natural[k] for k in ("wall_s", "tokens", "tok_s", "prompt_tokens")},
            "peers": {peer: {way: middle_run(runs[f"{peer}/{way}"]) for way in ways}
                      for peer in starts}}


def server_version(binary: str) -> str:
    """``llama-server --version``: its build may differ from the llama.cpp that
    llama-cpp-python vendors (whose system info the section records)."""
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    return " ".join((done.stdout + done.stderr).split())[:200]
