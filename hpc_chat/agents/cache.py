"""Response caching for agents with ``performance.enable_caching``.

An identical request (same agent settings, same messages, same seed, same model) is answered from
memory until ``cache_ttl`` seconds have passed. The cache is per process: each Parsl worker keeps
its own, and the driver keeps one in front of the executor so a repeated question never leaves
the login node.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any


def cache_key(agent_config: dict[str, Any], messages: list[dict[str, str]],
              seed: int | None, model: dict[str, Any]) -> str:
    """A stable digest of everything that decides the answer."""
    settings = dict(agent_config.get("config", {}))
    settings.pop("performance", None)  # caching knobs do not change the answer
    settings.pop("collaboration", None)  # routing knobs neither
    blob = json.dumps({"agent": agent_config.get("name"), "settings": settings,
                       "messages": messages, "seed": seed, "model": model},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """A small thread-safe TTL + LRU map from :func:`cache_key` to a result dict."""

    def __init__(self, max_entries: int = 1024):
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str, ttl: float) -> dict | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None or time.monotonic() - entry[0] > ttl:
                if entry is not None:
                    del self._data[key]
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return dict(entry[1])

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self._data[key] = (time.monotonic(), dict(value))
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


process_cache = ResponseCache()
