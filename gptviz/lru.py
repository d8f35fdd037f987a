"""A thread-safe LRU cache bounded by bytes, for traces shared by every session.

st.cache_resource bounds a cache by its number of entries, but one trace of 4 tokens is a
few kB and one of 1024 tokens can be 100 MB or more; a budget in bytes keeps the server's
memory flat however many distinct inputs arrive. Each key is computed once even when
several sessions ask for it at the same moment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class ByteLRU:
    def __init__(self, max_bytes: int, size_of):
        self.max_bytes = max_bytes
        self.size_of = size_of  # value -> bytes
        self._items: OrderedDict = OrderedDict()  # key -> (value, bytes), least recent first
        self._bytes = 0
        self._lock = threading.Lock()
        self._computing: dict = {}  # key -> lock held while that key is computed

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def _hit(self, key):
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item[0]
        return None

    def get(self, key, compute):
        """The cached value for key, or compute() stored under it (evicting the oldest)."""
        with self._lock:
            value = self._hit(key)
            if value is not None:
                return value
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # another thread may have computed it while we waited
                value = self._hit(key)
                if value is not None:
                    return value
            value = compute()
            size = self.size_of(value)
            with self._lock:
                self._computing.pop(key, None)
                if size <= self.max_bytes:  # larger than the whole budget: hand it out, keep nothing
                    self._items[key] = (value, size)
                    self._bytes += size
                    while self._bytes > self.max_bytes:
                        _, (_, old) = self._items.popitem(last=False)
                        self._bytes -= old
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
