"""The trace cache: bounded in bytes, least recently used out first, each key computed once."""

import threading
import time

from gptviz.lru import ByteLRU


def make(max_bytes=100):
    return ByteLRU(max_bytes, size_of=len)


def test_evicts_least_recently_used_to_stay_within_budget():
    cache = make(100)
    for key in "abcd":
        cache.get(key, lambda: b"x" * 30)
    assert len(cache) == 3 and cache.nbytes == 90
    calls = []
    cache.get("b", lambda: calls.append("b") or b"")  # a hit refreshes b
    cache.get("e", lambda: b"y" * 30)  # evicts c, the least recent
    assert calls == []
    assert cache.get("c", lambda: calls.append("c") or b"z") == b"z" and calls == ["c"]
    assert cache.nbytes <= 100


def test_a_value_larger_than_the_budget_is_returned_but_not_kept():
    cache = make(10)
    cache.get("small", lambda: b"12345")
    assert cache.get("huge", lambda: b"x" * 11) == b"x" * 11
    assert len(cache) == 1 and cache.nbytes == 5


def test_concurrent_requests_for_one_key_compute_it_once():
    cache = make(1000)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return b"value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", slow))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and results == [b"value"] * 8


def test_many_distinct_inputs_keep_memory_flat():
    cache = make(1000)
    for i in range(500):
        cache.get(i, lambda: b"x" * 37)
    assert cache.nbytes <= 1000 and len(cache) == 1000 // 37
