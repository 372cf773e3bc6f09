"""How an answer was made, recorded by the worker that made it: enough to make it again.

Each result carries the model file (name, size, sha256), the versions of hpc_chat and
llama-cpp-python, the exact messages decoded (after fitting to the context) and every sampler
setting, the seed included: a request without a seed gets one drawn here and recorded, so even
an unseeded answer can be replayed (``hpc-chat replay``), and the request's own format as sent
(``request_format``), which replay sends again. Where it ran: the scheduler's job id,
the host, the Parsl worker, batched or not, start and end.

A model's sha256 is computed once per file on a host and kept by path, size and modification
time, in memory and in ``$HPC_CHAT_HOME/cache/model-sha256.json`` (shared by the nodes that
share the home), so a 70 GB model is read once, not on every start.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

from hpc_chat.errors import ConfigError
from hpc_chat.util.paths import home_subdir, hpc_chat_home

_CHUNK = 8 << 20
_hashes: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


CACHE_FILE = "model-sha256.json"


def _cache_file() -> Path:
    """Where the hashes are read from (the checked home's ``cache/``; not made for a read)."""
    return hpc_chat_home() / "cache" / CACHE_FILE


def model_file(path: str) -> dict[str, Any]:
    """``{"model_file", "model_size", "model_sha256"}`` of a model file; size and sha256 are
    None for a model that is not a file (the built-in echo model)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"model_file": path, "model_size": None, "model_sha256": None}
    return {"model_file": p.name, "model_size": st.st_size,
            "model_sha256": file_sha256(p, st)}


def file_sha256(path: Path, st: os.stat_result | None = None) -> str:
    st = st or path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        if key in _hashes:
            return _hashes[key]
        stored = _read_cache()
        digest = stored.get(_cache_key(key))
        if digest is None:
            h = hashlib.sha256()
            with path.open("rb") as fh:
                while block := fh.read(_CHUNK):
                    h.update(block)
            digest = h.hexdigest()
            stored[_cache_key(key)] = digest
            _write_cache(stored)
        _hashes[key] = digest
        return digest


def _cache_key(key: tuple[str, int, int]) -> str:
    return f"{key[0]}|{key[1]}|{key[2]}"


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(data, dict) else {}


def _write_cache(stored: dict[str, str]) -> None:
    """Best effort (a read-only home only costs a second hash); written whole and renamed."""
    try:
        path = home_subdir("cache") / CACHE_FILE  # made 0700, checked
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stored))
        os.replace(tmp, path)
    except (OSError, ConfigError):
        pass


@functools.cache
def versions() -> dict[str, str | None]:
    """llama.cpp itself has no version of its own in llama-cpp-python: it is the copy that
    llama-cpp-python release bundles."""
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    lcp = version("llama-cpp-python")
    return {"hpc_chat": version("hpc_chat"), "llama_cpp_python": lcp,
            "llama_cpp": f"bundled with llama-cpp-python {lcp}" if lcp else None}


def job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID")
