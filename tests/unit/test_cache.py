"""The response cache: same request -> cached until the TTL; different settings -> miss."""

import time

from hpc_chat.agents.cache import ResponseCache, cache_key

AGENT = {"name": "a", "config": {"temperature": 0.5, "system_prompt": "x",
                                 "performance": {"enable_caching": True}}}
MSGS = [{"role": "user", "content": "hi"}]


def test_hit_within_ttl_and_expiry():
    cache = ResponseCache()
    key = cache_key(AGENT, MSGS, 1, {})
    assert cache.get(key, ttl=10) is None
    cache.put(key, {"content": "hello"})
    assert cache.get(key, ttl=10) == {"content": "hello"}
    time.sleep(0.05)
    assert cache.get(key, ttl=0.01) is None  # expired entries are dropped
    assert (cache.hits, cache.misses) == (1, 2)


def test_key_changes_with_what_decides_the_answer():
    base = cache_key(AGENT, MSGS, 1, {})
    hotter = {**AGENT, "config": {**AGENT["config"], "temperature": 0.9}}
    assert cache_key(hotter, MSGS, 1, {}) != base
    assert cache_key(AGENT, MSGS, 2, {}) != base
    assert cache_key(AGENT, [{"role": "user", "content": "hi!"}], 1, {}) != base
    assert cache_key(AGENT, MSGS, 1, {"n_ctx": 4096}) != base


def test_key_ignores_caching_and_routing_knobs():
    other = {**AGENT, "config": {**AGENT["config"], "performance": {"cache_ttl": 5},
                                 "collaboration": {"delegation_threshold": 0.1}}}
    assert cache_key(other, MSGS, 1, {}) == cache_key(AGENT, MSGS, 1, {})


def test_lru_bound():
    cache = ResponseCache(max_entries=2)
    for i in range(3):
        cache.put(str(i), {"i": i})
    assert cache.get("0", ttl=60) is None
    assert cache.get("2", ttl=60) == {"i": 2}


def test_returned_values_are_copies():
    cache = ResponseCache()
    cache.put("k", {"content": "x"})
    got = cache.get("k", ttl=60)
    got["content"] = "changed"
    assert cache.get("k", ttl=60)["content"] == "x"
