"""The multi-turn row: conversations whose every request carries its whole history.

This is how OpenAI clients talk to a server: 16 conversations of 4 turns, each conversation a
client that sends its next message, with every earlier message and answer, once the previous
answer is back. The first message of each is a prompt of the real workload, the later ones
follow-ups; the packaged ``balanced_agent``'s system prompt and sampling, a seed per turn.

The peers are warm ``hpc-chat serve`` (packaged defaults) and llama.cpp's own ``llama-server``
on the same model file with 8 and 16 slots, which keeps each slot's prompt and reuses its
common prefix. The runs go in ABBA order (each peer's first run before every other's, then the
reverse), so a machine that slows down or speeds up during the row weighs on every peer alike.
Each run has a server of its own, started for it and warmed with one opening per
conversation, none of them in the set
(:func:`~hpc_chat.bench.measure.warm_up_prompts`), its start not timed: every run's
conversations open with the same prompts, and a server kept across the runs would find them
in its prompt cache (llama-server's ``--cache-ram`` keeps every prompt it has seen).
Answers differ in length between engines (their samplers draw differently), so the figure
compared is generated tokens/s; the prompt tokens each peer was sent are reported beside it.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from functools import partial
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
from hpc_chat.bench.peers import llama_server_peer, post_chat, serving

CONVERSATIONS = 16
TURNS = 4
FOLLOW_UPS = ("Tell me more about that.", "Give one example.", "Sum it up in one sentence.")
SLOTS = (8, 16)


def conversations_run(url: str, headers: dict, body: Callable[[Any], dict],
                      conversations: int = CONVERSATIONS, turns: int = TURNS,
                      seed_base: int = 0, first: list[str] | None = None) -> dict:
    """``conversations`` clients at once, each sending ``turns`` messages in a row with its
    whole history: generated and prompt tokens, and the wall time of the whole. Each repeat
    takes its own ``seed_base``: a repeated request would be answered from serve's response
    cache. ``first``: the conversations' opening messages (the prompt set's unless given)."""
    from hpc_chat.agents.config import AgentConfig

    agent = AgentConfig.from_yaml(SYSTEM_AGENT).config
    first = first or prompts(conversations)

    def talk(i: int) -> tuple[int, int]:
        history: list[dict] = []
        generated = sent = 0
        for turn in range(turns):
            asked = first[i] if turn == 0 else FOLLOW_UPS[(turn - 1) % len(FOLLOW_UPS)]
            req = bench_request(agent, asked, seed_base + i * turns + turn, None)
            messages = req.messages if turn == 0 else [*history, req.messages[-1]]
            done = post_chat(url, headers, body(req.model_copy(update={"messages": messages})),
                             timeout=900)
            generated += done["usage"]["completion_tokens"]
            sent += done["usage"]["prompt_tokens"]
            history = [*messages, {"role": "assistant",
                                   "content": done["choices"][0]["message"]["content"]}]
        return generated, sent

    start = time.perf_counter()
    with ThreadPoolExecutor(conversations) as pool:
        done = list(pool.map(talk, range(conversations)))
    wall = time.perf_counter() - start
    tokens = sum(g for g, _ in done)
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall,
            "req_s": conversations * turns / wall, "prompt_tokens": sum(s for _, s in done)}


def _serve_body(req) -> dict:
    return {"model": "balanced_agent", "messages": req.messages, "temperature": req.temperature,
            "top_p": req.top_p, "seed": req.seed, "max_tokens": req.max_tokens}


def _server_body(req) -> dict:
    return {"messages": req.messages, **req.sampling()}


def multiturn_workload(repeats: int, log: Callable[[str], None],
                       conversations: int = CONVERSATIONS, turns: int = TURNS) -> dict[str, Any]:
    """The multi-turn row: hpc-chat serve against llama-server at each of :data:`SLOTS`
    (llama-server only when ``HPC_CHAT_LLAMA_SERVER`` names its binary), each run on a
    server started for it."""
    binary = os.environ.get("HPC_CHAT_LLAMA_SERVER")
    cores = len(os.sched_getaffinity(0))
    starts: dict[str, Callable[[], AbstractContextManager[tuple[str, dict]]]] = {
        "hpc_chat": serving}
    bodies: dict[str, Callable] = {"hpc_chat": _serve_body}
    if binary and os.path.isfile(binary):
        for slots in SLOTS:
            starts[f"llama_server_{slots}"] = partial(llama_server_peer, binary, cores, slots,
                                                      port=18300 + slots)
            bodies[f"llama_server_{slots}"] = _server_body
    runs: dict[str, list[dict]] = {name: [] for name in starts}
    order = abba(list(starts), repeats)
    for i, name in enumerate(order, 1):
        log(f"   multi-turn run {i}/{len(order)}: {name}")
        with starts[name]() as (base, hdrs):  # warm: the engine's load, every worker
            conversations_run(base, hdrs, bodies[name], conversations, turns=1,
                              seed_base=900_000, first=warm_up_prompts(conversations))
            runs[name].append(conversations_run(base, hdrs, bodies[name], conversations,
                                                turns, seed_base=1000 * len(runs[name])))

    import llama_cpp

    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_description(),
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "cores": cores, "conversations": conversations,
            "turns": turns, "repeats": repeats, "order": order, "fresh_peers": True,
            "hpc_chat": middle_run(runs["hpc_chat"]),
            "llama_server": {name.rsplit("_", 1)[1]: middle_run(done)
                             for name, done in runs.items() if name != "hpc_chat"}}
