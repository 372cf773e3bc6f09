"""The process's loaded engines: one per model spec, and one batched context per batch width.

A worker answers many requests and a model load costs far more than a short answer, so an
engine stays loaded for the life of the process. Hits and misses are counted (what a worker
reports back about its model cache). Echo specs get the echo engines (:mod:`hpc_chat.llm.echo`).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from hpc_chat.llm.interface import BatchEngine, Engine
from hpc_chat.llm.models import ModelSpec
from hpc_chat.protocol.context import ModelDefaults

# The KV memory (MiB) a decoding context's prompt-cache holders may take unless the site's
# ``model.prefix_cache_mb`` says otherwise: 22 holders for the embedded model at 2048 cells,
# enough for 16 conversations in flight; the least, 3, for a 7B model at 4096.
PREFIX_CACHE_MB = ModelDefaults.model_fields["prefix_cache_mb"].default

_engines: dict[ModelSpec, Engine] = {}
_batched: dict[tuple[ModelSpec, int, int], BatchEngine] = {}
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def get_engine(spec: ModelSpec) -> tuple[Engine, bool]:
    """The engine for ``spec`` and whether this call loaded it."""
    with _lock:
        engine = _engines.get(spec)
        if engine is not None:
            _stats["hits"] += 1
            return engine, False
        _stats["misses"] += 1
        if spec.is_echo:
            from hpc_chat.llm.echo import EchoEngine as cls
        else:
            from hpc_chat.llm.engine import ChatEngine as cls
        engine = _engines[spec] = cls(spec)
        return engine, True


def get_batched_engine(engine: Engine, n_seq: int, cache_mb: int | None = None) -> BatchEngine:
    """The batched context over a loaded engine's model with ``n_seq`` sequences, its prompt
    cache within ``cache_mb`` MiB of KV (the site's ``model.prefix_cache_mb``; None: the
    default, :data:`PREFIX_CACHE_MB`; 0: no prompt cache)."""
    if cache_mb is None:
        cache_mb = PREFIX_CACHE_MB
    if n_seq == 1:  # a one-sequence context keeps the fewest holders, or none: one context
        cache_mb = min(cache_mb, 1)
    key = (engine.spec, n_seq, cache_mb)
    with _lock:
        if key not in _batched:
            if engine.spec.is_echo:
                from hpc_chat.llm.echo import EchoBatchedEngine

                _batched[key] = EchoBatchedEngine(engine, n_seq)
            else:
                from hpc_chat.llm.batched import BatchedEngine

                # the bound for a decoding context; a one-sequence one (logprobs and text
                # completions decoded in a worker) keeps the least, unless the cache is off
                _batched[key] = BatchedEngine(engine, n_seq, prefix_cache_bytes=(
                    cache_mb << 20 if n_seq > 1 or not cache_mb else None))
        return _batched[key]


_embedders: dict[tuple[ModelSpec, Any], Any] = {}


def get_embedder(engine: Engine, pooling=None):
    """The embedding context over a loaded engine's model (:mod:`hpc_chat.llm.embedding`),
    made once per pooling."""
    key = (engine.spec, pooling)
    with _lock:
        if key not in _embedders:
            if engine.spec.is_echo:
                from hpc_chat.llm.echo import EchoEmbedder as cls
            else:
                from hpc_chat.llm.embedding import Embedder as cls
            _embedders[key] = cls(engine, pooling)
        return _embedders[key]


def cache_info() -> dict[str, Any]:
    """Hits, misses and the specs loaded in this process."""
    with _lock:
        return {"hits": _stats["hits"], "misses": _stats["misses"], "pid": os.getpid(),
                "loaded": [s.model_dump() for s in _engines]}


def clear_cache() -> None:
    """Drop every loaded model in this process (tests and memory pressure)."""
    with _lock:
        for batched in _batched.values():
            batched.close()
        _batched.clear()
        for embedder in _embedders.values():
            embedder.close()
        _embedders.clear()
        _engines.clear()
        _stats.update(hits=0, misses=0)
