"""A thread-safe LRU cache bounded by bytes, shared by every session: for traces and models.

st.cache_resource bounds a cache by its number of entries, but one trace of 4 tokens is a
few kB and one of 1024 tokens can be 100 MB or more, and a model can be 1 MB or 1.5 GB; a
budget in bytes keeps the server's memory flat however many distinct inputs arrive. Each
key is computed once even when several sessions ask for it at the same moment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class _Pending:
    """A key being computed: the lock its waiters queue on, then the value they share."""

    __slots__ = ("lock", "value")

    def __init__(self):
        self.lock = threading.Lock()
        self.value = None


class ByteLRU:
    """`size_of(value)` -> bytes. A value larger than the whole budget is handed out and not
    kept, or, with `keep_oversized`, kept alone (the next miss evicts it before computing)."""

    def __init__(self, max_bytes: int, size_of, keep_oversized: bool = False):
        self.max_bytes = max_bytes
        self.size_of = size_of
        self.keep_oversized = keep_oversized
        self._items: OrderedDict = OrderedDict()  # key -> (value, bytes), least recent first
        self._bytes = 0
        self._reserved = 0  # announced bytes of the values being computed now
        self._lock = threading.Lock()
        self._computing: dict = {}  # key -> _Pending while that key is computed

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        """Whether key is kept now (without making it the most recently used)."""
        return key in self._items

    def _hit(self, key):
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item[0]
        return None

    def _evict(self, limit: int, spare=None) -> None:
        """Drop least recently used values until at most `limit` bytes are kept (or only `spare`)."""
        while self._items and self._bytes > limit:
            if next(iter(self._items)) == spare:  # the most recent, so the only one left
                break
            _, (_, old) = self._items.popitem(last=False)
            self._bytes -= old

    def get(self, key, compute, size: int | None = None):
        """The cached value for key, or compute() stored under it (evicting the oldest).

        `size`: the bytes compute() will allocate, when known beforehand. Room is then made
        before computing: least recently used values go until those kept, plus every value
        being computed, fit the budget (all of them for a value larger than the budget). So
        memory peaks at the budget, not at the budget plus the new value.
        """
        with self._lock:
            value = self._hit(key)
            if value is not None:
                return value
            pending = self._computing.setdefault(key, _Pending())
        with pending.lock:
            if pending.value is not None:  # computed while we waited, kept or not
                return pending.value
            with self._lock:
                value = self._hit(key)
                if value is not None:
                    return value
                reserved = max(0, size or 0)
                self._reserved += reserved
                self._evict(self.max_bytes - self._reserved)
            try:
                value = compute()
                nbytes = self.size_of(value)
            except BaseException:
                with self._lock:
                    self._reserved -= reserved
                    self._computing.pop(key, None)
                raise
            pending.value = value
            with self._lock:
                self._reserved -= reserved
                self._computing.pop(key, None)  # together with storing: no second compute slips in
                if nbytes <= self.max_bytes or self.keep_oversized:
                    self._items[key] = (value, nbytes)
                    self._bytes += nbytes
                    # Room for the values still being computed too, never by dropping this one.
                    self._evict(self.max_bytes - self._reserved, spare=key)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
