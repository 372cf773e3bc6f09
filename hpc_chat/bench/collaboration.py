"""The collaboration rows: a 3-agent ``synthesize`` over the real workload's prompts.

hpc_chat runs it as a user would (``hpc-chat batch`` with ``--mode synthesize``: each round
of every prompt one continuous batch on the node's engine). The peers run the same pattern,
the same prompts, personas, sampling, seeds and synthesis prompt, over HTTP against llama.cpp's
own ``llama-server -np 8`` (same model file): a client that sends each round's requests
concurrently, every prompt at once (the best a framework such as AutoGen or LangGraph can do),
and one that sends them one at a time (what a group chat does). Answers differ in length from
one engine to another (different samplers' random streams), so the figure compared is
generated tokens/s over every round. The runs go in ABBA order (hpc_chat, then each client, then
back), so a machine that drifts during the section weighs on every peer alike. Each of
llama-server's runs has a server started for it (:func:`~hpc_chat.bench.peers.on_fresh_llama_server`
says why), as each ``hpc-chat batch`` run starts its engine anew.

A quality check runs beside it: a shipped set of short arithmetic and fact questions
(``facts.jsonl``), each answered by ``route`` (the default agent alone) and by ``review`` (the
three agents, their review rounds, then a synthesis), scored by whether the reply contains the
expected answer. The embedded 135M model may gain nothing: the figure is what it measured.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from hpc_chat.bench.measure import (
    machine_description,
    middle_run,
    prompts,
    runs_in_abba_order,
)
from hpc_chat.bench.peers import on_fresh_llama_server, post_chat

AGENTS = ("creative_agent", "analytical_agent", "balanced_agent")
AGGREGATOR = "balanced_agent"
SEQUENTIAL_PROMPTS = 16  # the one-at-a-time client's share: it takes 4 requests in a row each


def _workflow_file(tmp: Path, mode: str, agents: tuple[str, ...]) -> Path:
    """The packaged workflow with its collaboration section set."""
    from hpc_chat.util.configfile import PACKAGED_CONFIG_DIR, load_yaml

    data = load_yaml(PACKAGED_CONFIG_DIR / "ParslChatWorkflow.yml")
    data["config"]["agents"] = [
        {**a, "config_file": str(PACKAGED_CONFIG_DIR / Path(a["config_file"]).name)}
        for a in data["config"]["agents"]]
    data["config"]["collaboration"] = {"mode": mode, "agents": list(agents),
                                       "aggregator": AGGREGATOR}
    data["config"]["data_units"] = {"conversation_history": {"type": "memory"}}
    path = tmp / f"{mode}.yml"
    path.write_text(json.dumps(data))
    return path


def hpc_chat_run(questions: list[str], mode: str, agents: tuple[str, ...],
                 lengths: list[int] | None = None) -> dict[str, Any]:
    """``hpc-chat batch`` in ``mode`` end to end (``route``: the first agent alone; else the
    collaboration over ``agents``), each line seeded by its number: wall time,
    the time from launch to the first request on a worker, tokens generated and prompt tokens
    counted over every round, replies, and each line's mean answer length over its rounds.
    ``lengths``: every answer of line i is ``lengths[i]`` tokens long (``ignore_eos``)."""
    with tempfile.TemporaryDirectory(prefix="hpc_chat_bench_") as tmp:
        tmp = Path(tmp)
        src, out = tmp / "in.jsonl", tmp / "out.jsonl"
        src.write_text("".join(json.dumps({
            "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": agents[0] if mode == "route" else "auto", "seed": i,
                     "messages": [{"role": "user", "content": q}], **fixed_length(lengths, i)}})
            + "\n" for i, q in enumerate(questions)))
        launched = time.time()
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "hpc_chat", "batch", str(src), "-o", str(out), "--config",
             str(_workflow_file(tmp, mode, agents))], capture_output=True, text=True,
            timeout=7200, env={**os.environ, "HPC_CHAT_HOME": str(tmp / "home")})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"hpc-chat batch failed ({done.returncode}): "
                               f"{done.stderr[-600:]}")
        lines = sorted((json.loads(x) for x in out.read_text().splitlines()),
                       key=lambda x: int(x["custom_id"][1:]))
    bodies = [x["response"]["body"] for x in lines]
    made = [a for b in bodies for a in b["hpc_chat"]["agents"]]
    tokens = sum(b["usage"]["completion_tokens"] for b in bodies)
    first = min(a["start"] for a in made)
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall,
            "prompt_tokens": sum(b["usage"]["prompt_tokens"] for b in bodies),
            "req_s": len(made) / wall, "requests": len(made), "start_s": first - launched,
            "steady_tok_s": tokens / (wall - (first - launched)),
            "replies": [b["choices"][0]["message"]["content"] for b in bodies],
            "lengths": [max(1, round(statistics.mean(a["usage"]["completion_tokens"]
                                                     for a in b["hpc_chat"]["agents"])))
                        for b in bodies]}


def figures(run: dict[str, Any]) -> dict[str, Any]:
    """A :func:`hpc_chat_run` as the results file keeps it: its figures, without the replies
    and lengths of each line (which the quality check and the equal-length section read)."""
    return {k: v for k, v in run.items() if k not in ("replies", "lengths")}


def fixed_length(lengths: list[int] | None, i: int) -> dict[str, Any]:
    """What a request of line ``i`` adds to be ``lengths[i]`` tokens long, as llama-server's
    own benchmarking option does it (nothing without ``lengths``)."""
    return {} if lengths is None else {"max_tokens": lengths[i], "ignore_eos": True}


def peer_run(url: str, questions: list[str], concurrent: bool,
             lengths: list[int] | None = None) -> dict[str, Any]:
    """The same synthesize pattern driven over HTTP: each prompt's three answers, then the
    aggregator's synthesis of them; ``concurrent``: every prompt at once and each round's
    requests together, else every request one after another. ``lengths``: as
    :func:`hpc_chat_run`'s."""
    from hpc_chat.agents.config import AgentConfig
    from hpc_chat.agents.modes import CollaborationSettings, synthesis_prompt
    from hpc_chat.util.configfile import PACKAGED_CONFIG_DIR

    personas = {a: AgentConfig.from_yaml(PACKAGED_CONFIG_DIR / f"EnhancedCollaborativeAgent_{i}"
                                         f".yml").config for i, a in enumerate(AGENTS, 1)}
    settings = CollaborationSettings(mode="synthesize")
    counted, prompted = [], []

    def complete(agent: str, content: str, i: int) -> str:  # prompt i: its seed and length
        persona = personas[agent]
        body = {"messages": [{"role": "system", "content": persona.system_prompt},
                             {"role": "user", "content": content}],
                **persona.sampling(), "seed": i, **fixed_length(lengths, i)}
        done = post_chat(url, {}, body)
        counted.append(done["usage"]["completion_tokens"])
        prompted.append(done["usage"]["prompt_tokens"])
        return done["choices"][0]["message"]["content"] or ""

    def one(i_question: tuple[int, str]) -> None:
        i, question = i_question
        if concurrent:
            with ThreadPoolExecutor(len(AGENTS)) as pool:
                texts = list(pool.map(lambda a: complete(a, question, i), AGENTS))
        else:
            texts = [complete(a, question, i) for a in AGENTS]
        answers = [{"agent": a, "content": t} for a, t in zip(AGENTS, texts)]
        complete(AGGREGATOR, synthesis_prompt(settings, question, answers), i)

    start = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(questions)) as pool:
            list(pool.map(one, enumerate(questions)))
    else:
        for item in enumerate(questions):
            one(item)
    wall = time.perf_counter() - start
    tokens = sum(counted)
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall,
            "prompt_tokens": sum(prompted), "req_s": len(counted) / wall,
            "requests": len(counted)}


def facts() -> list[dict[str, str]]:
    text = resources.files("hpc_chat.bench").joinpath("facts.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def correct(reply: str, answer: str) -> bool:
    """The expected answer appears in the reply as a word (``12`` not inside ``112``)."""
    return re.search(rf"(?<![\w.]){re.escape(answer.lower())}(?![\w])", reply.lower()) \
        is not None


def quality_check() -> dict[str, Any]:
    """``route`` (the default agent alone) against ``review`` on the shipped fact set."""
    items = facts()
    questions = [f["question"] for f in items]
    out: dict[str, Any] = {"questions": len(items)}
    for mode, agents in (("route", (AGGREGATOR,)), ("review", AGENTS)):
        run = hpc_chat_run(questions, mode, agents)
        out[mode] = sum(correct(r, f["answer"]) for r, f in zip(run["replies"], items)) / \
            len(items)
        out[f"{mode}_tokens"] = run["tokens"]
    return out


def collaboration_workload(n: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The rows of docs/performance.md's collaboration section: hpc_chat and the two clients
    of llama-server (when ``HPC_CHAT_LLAMA_SERVER`` names its binary; a server started for
    each run), ``repeats`` runs each in ABBA order, each peer summed up by its median run
    with the range."""
    questions = prompts(n)
    cores = len(os.sched_getaffinity(0))
    out: dict[str, Any] = {"prompts": n, "agents": list(AGENTS), "aggregator": AGGREGATOR,
                           "date": time.strftime("%Y-%m-%d %H:%M"),
                           "machine": machine_description(), "cores": cores,
                           "repeats": repeats, "sequential_prompts": SEQUENTIAL_PROMPTS}
    peers: dict[str, Callable[[], dict[str, Any]]] = {
        "hpc_chat": lambda: figures(hpc_chat_run(questions, "synthesize", AGENTS))}
    server_bin = os.environ.get("HPC_CHAT_LLAMA_SERVER")
    if server_bin and Path(server_bin).is_file():  # why fresh: on_fresh_llama_server
        out["fresh_servers"] = True
        peers["concurrent"] = lambda: on_fresh_llama_server(
            server_bin, cores, 8, lambda url: peer_run(url, questions, True))
        peers["sequential"] = lambda: on_fresh_llama_server(
            server_bin, cores, 8,
            lambda url: peer_run(url, questions[:SEQUENTIAL_PROMPTS], False))
    out["order"], runs = runs_in_abba_order(peers, repeats, log, "synthesize")
    out["hpc_chat"] = middle_run(runs["hpc_chat"], "steady_tok_s")  # the figure compared
    for name in ("concurrent", "sequential"):
        out[name] = middle_run(runs[name]) if name in runs else None
    log("   quality: route against review on the shipped fact set")
    out["quality"] = quality_check()
    return out
