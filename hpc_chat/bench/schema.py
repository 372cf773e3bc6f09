"""What a schema costs: the real workload with a ``json_schema``, beside the same workload
without one and beside llama-server with the same ``json_schema``, all in one run.

The same requests as the real workload (the packaged agent, its settings, the shipped prompts,
fixed seeds), each asking for :data:`RESPONSE_FORMAT`. Answers change length under a schema, so
the comparison is tokens/s, and the fraction of answers that validated is kept beside it.
``hpc-chat bench --only schema`` measures this section alone into an existing results file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from hpc_chat.bench.measure import SYSTEM_AGENT, machine_description, median_of
from hpc_chat.bench.peers import llama_server_run
from hpc_chat.bench.suite import hpc_chat_batch_run

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["answer", "confidence"],
          "properties": {"answer": {"type": "string", "maxLength": 600},
                         "confidence": {"enum": ["low", "medium", "high"]}}}
RESPONSE_FORMAT = {"type": "json_schema",
                   "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}


def schema_workload(n: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    from hpc_chat.agents.config import AgentConfig

    agent = AgentConfig.from_yaml(SYSTEM_AGENT)
    out: dict[str, Any] = {"requests": n, "agent": agent.name, "repeats": repeats,
                           "date": time.strftime("%Y-%m-%d %H:%M"),
                           "machine": machine_description()}
    log(f"   hpc-chat batch, {n} requests, no schema")
    out["plain"] = median_of(repeats, lambda: hpc_chat_batch_run(n, agent.name))
    log(f"     {out['plain']['tok_s']:.1f} tokens/s")
    log(f"   hpc-chat batch, {n} requests, each with a json_schema")
    out["schema"] = median_of(repeats, lambda: hpc_chat_batch_run(
        n, agent.name, {"response_format": RESPONSE_FORMAT}))
    log(f"     {out['schema']['tok_s']:.1f} tokens/s, "
        f"{100 * out['schema'].get('valid_fraction', 0):.0f}% valid")
    out["llama_server"] = out["llama_server_plain"] = None
    server_bin = os.environ.get("HPC_CHAT_LLAMA_SERVER")
    if server_bin and Path(server_bin).is_file():
        cores = len(os.sched_getaffinity(0))
        log("   llama-server -np 8, no schema")
        out["llama_server_plain"] = median_of(repeats, lambda: llama_server_run(
            server_bin, n, cores, 8, max_tokens=None))
        log(f"     {out['llama_server_plain']['tok_s']:.1f} tokens/s")
        log("   llama-server -np 8, the same json_schema")
        out["llama_server"] = median_of(repeats, lambda: llama_server_run(
            server_bin, n, cores, 8, max_tokens=None,
            extra={"response_format": RESPONSE_FORMAT}))
    return out
