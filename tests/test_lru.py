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


def test_room_is_made_before_computing_when_the_size_is_known():
    """With `size`, the least recently used values are dropped before compute() allocates."""
    cache = make(100)
    cache.get("a", lambda: b"x" * 40)
    cache.get("b", lambda: b"x" * 40)
    seen = []
    cache.get("c", lambda: seen.append(("a" in cache, "b" in cache, cache.nbytes)) or b"y" * 40, size=40)
    assert seen == [(False, True, 40)]  # a went before c was computed: never 120 bytes at once
    assert cache.nbytes == 80 and "b" in cache and "c" in cache


def test_a_value_larger_than_the_budget_is_computed_alone_and_kept_alone_if_asked():
    cache = ByteLRU(100, size_of=len, keep_oversized=True)
    cache.get("a", lambda: b"x" * 40)
    seen = []
    big = cache.get("big", lambda: seen.append(len(cache)) or b"x" * 150, size=150)
    assert big == b"x" * 150 and seen == [0]  # everything went first
    assert "big" in cache and len(cache) == 1  # kept: the next rerun does not rebuild it
    cache.get("a", lambda: seen.append("big" in cache) or b"x" * 40, size=40)
    assert seen == [0, False] and cache.nbytes == 40  # and the next miss drops it first


def test_values_being_computed_count_against_the_budget():
    """Two misses at once: the second makes room for both, not only for itself."""
    cache = make(100)
    cache.get("old", lambda: b"x" * 30)
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return b"s" * 60

    worker = threading.Thread(target=lambda: cache.get("slow", slow, size=60))
    worker.start()
    started.wait(5)
    assert "old" in cache  # 30 kept + 60 being computed fit
    seen = []
    cache.get("new", lambda: seen.append("old" in cache) or b"n" * 30, size=30)
    release.set()
    worker.join()
    assert seen == [False]  # 30 + 60 + 30 would not: old went before new was computed
    assert cache.nbytes == 90 and "slow" in cache and "new" in cache


def test_a_failed_compute_is_not_cached_and_frees_its_reservation():
    cache = make(100)

    def fail():
        raise ValueError("no")

    for _ in range(2):
        try:
            cache.get("k", fail, size=80)
        except ValueError:
            pass
    cache.get("a", lambda: b"x" * 60)
    cache.get("b", lambda: b"x" * 40, size=40)
    assert "a" in cache and cache.nbytes == 100 and cache.get("k", lambda: b"ok") == b"ok"
