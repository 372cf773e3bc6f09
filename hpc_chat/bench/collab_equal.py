"""The collaboration section at equal answer lengths: a comparison that answer lengths cannot
bias.

With answers of natural length, hpc_chat and llama-server draw different tokens and stop at
different places. In the collaboration section llama-server wrote 11% longer answers over about
the same prompt work, and with the prompt work fixed, longer answers alone raise tokens/s. Here
both peers run the same ``synthesize`` pattern (:mod:`hpc_chat.bench.collaboration`) with every
answer of prompt i exactly ``lengths[i]`` tokens long: ``ignore_eos`` with that ``max_tokens``,
llama-server's own benchmarking option, which hpc_chat's engine takes too. ``lengths[i]`` is
the mean length of prompt i's four answers in a first, natural ``hpc-chat batch --mode
synthesize``. So both generate the same tokens, and their synthesis prompts carry answers of
the same lengths; the prompt tokens each counted are reported beside it. The runs go in ABBA
order, each of llama-server's on a server of its own
(:func:`~hpc_chat.bench.peers.on_fresh_llama_server`); hpc_chat's figure is from the first
request on a worker, as in the natural section.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from hpc_chat.bench.collaboration import AGENTS, AGGREGATOR, figures, hpc_chat_run, peer_run
from hpc_chat.bench.measure import machine_description, middle_run, prompts, runs_in_abba_order
from hpc_chat.bench.peers import on_fresh_llama_server


def collab_equal_workload(n: int, repeats: int, log: Callable[[str], None]
                          ) -> dict[str, Any] | None:
    """hpc_chat against llama-server's concurrent client at equal answer lengths, ``repeats``
    runs each in ABBA order; None without llama-server (``HPC_CHAT_LLAMA_SERVER``)."""
    server_bin = os.environ.get("HPC_CHAT_LLAMA_SERVER")
    if not server_bin or not Path(server_bin).is_file():
        log("   skipped: no llama-server (make llama-tools, then HPC_CHAT_LLAMA_SERVER)")
        return None
    questions = prompts(n)
    cores = len(os.sched_getaffinity(0))
    log("   natural answer lengths: one hpc-chat batch --mode synthesize")
    natural = hpc_chat_run(questions, "synthesize", AGENTS)
    lengths = natural["lengths"]

    peers = {"hpc_chat": lambda: figures(hpc_chat_run(questions, "synthesize", AGENTS,
                                                      lengths)),
             "concurrent": lambda: on_fresh_llama_server(  # each run cold, as hpc_chat's
                 server_bin, cores, 8, lambda url: peer_run(url, questions, True, lengths))}
    order, runs = runs_in_abba_order(peers, repeats, log, "equal-length synthesize")
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_description(),
            "cores": cores, "prompts": n, "agents": list(AGENTS), "aggregator": AGGREGATOR,
            "repeats": repeats, "order": order, "lengths": lengths, "fresh_servers": True,
            "natural_tokens": natural["tokens"],
            "expected_tokens": (len(AGENTS) + 1) * sum(lengths),  # every answer as asked
            "hpc_chat": middle_run(runs["hpc_chat"], "steady_tok_s"),
            "concurrent": middle_run(runs["concurrent"])}
