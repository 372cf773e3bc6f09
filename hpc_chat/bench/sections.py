"""The sections ``hpc-chat bench --only NAME`` measures on their own, in the order ``make
bench`` runs them (the numbered sections of the report come after them). The suite and the CLI
both read this one table, so a section added here is in the suite, in ``--only``'s choices and
in ``results.json`` under its name. Each module is imported when its section runs (the CLI
reads the names without loading the benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Log = Callable[[str], None]


@dataclass(frozen=True)
class Section:
    says: str  # what the log says as it starts
    run: Callable[[int, int, Log], dict[str, Any] | None]  # (repeats, real requests, log)


def _real(repeats: int, requests: int, log: Log) -> dict[str, Any]:
    from hpc_chat.bench.suite import real_workload

    return real_workload(requests, repeats, log)


def _equal(repeats: int, requests: int, log: Log) -> dict[str, Any]:
    from hpc_chat.bench.equal import equal_workload

    return equal_workload(requests, repeats, log)


def _fanout(repeats: int, requests: int, log: Log) -> dict[str, Any] | None:
    from hpc_chat.bench.fanout import fanout_workload

    return fanout_workload(repeats, log)


def _schema(repeats: int, requests: int, log: Log) -> dict[str, Any]:
    from hpc_chat.bench.schema import schema_workload

    return schema_workload(requests, repeats, log)


def _embeddings(repeats: int, requests: int, log: Log) -> dict[str, Any]:
    from hpc_chat.bench.embeddings import EMBED_INPUTS, embedding_workload

    return embedding_workload(EMBED_INPUTS, repeats, log)


def _collaboration(repeats: int, requests: int, log: Log) -> dict[str, Any]:
    from hpc_chat.bench.collaboration import collaboration_workload

    return collaboration_workload(requests, repeats, log)


def _collaboration_equal(repeats: int, requests: int, log: Log) -> dict[str, Any] | None:
    from hpc_chat.bench.collab_equal import collab_equal_workload

    return collab_equal_workload(requests, repeats, log)


def _multiturn(repeats: int, requests: int, log: Log) -> dict[str, Any]:
    from hpc_chat.bench.multiturn import multiturn_workload

    return multiturn_workload(repeats, log)


def _formats(repeats: int, requests: int, log: Log) -> dict[str, Any]:
    from hpc_chat.bench.formats import formats_workload

    return formats_workload(repeats, log)


def _scale(repeats: int, requests: int, log: Log) -> dict[str, Any]:
    from hpc_chat.bench.scale import scale_workload

    return scale_workload(log)


SECTIONS: dict[str, Section] = {
    "real": Section("the real workload", _real),
    "equal": Section("the real workload on warm servers, answers of equal length", _equal),
    "fanout": Section("the demo's fan-out against llama-batched-bench", _fanout),
    "schema": Section("the real workload with a json_schema", _schema),
    "embeddings": Section("a corpus embedded through /v1/embeddings", _embeddings),
    "collaboration": Section("agents that collaborate: synthesize over the real workload",
                             _collaboration),
    "collaboration_equal": Section("agents that collaborate, answers of equal length",
                                   _collaboration_equal),
    "multiturn": Section("multi-turn conversations through serve and llama-server", _multiturn),
    "formats": Section("weight formats: the embedded model as shipped, as Q4_0 and as IQ4_NL",
                       _formats),
    "scale": Section("corpus scale: hpc-chat batch with the echo model", _scale),
}
