"""Capped, keyed recency tables: per-action / per-fingerprint windows and fan-out.

Why this shape: the per-agent value must stay bounded however long the history,
so every keyed table has a hard capacity and forgets the least recently touched
key first.  Keys are fixed-size stable digests packed in a ``bytearray`` and
looked up with ``bytearray.find`` (a C memchr-style scan, ~0.1-0.3 us over a few
hundred bytes) instead of a dict, so a table is three flat buffers that the
codec copies verbatim and that cost no per-entry Python objects in memory.

Two tables:

* `KeyedWindows`: key -> ring segment of a `WindowSet` plus the event time the
  rings were last advanced to (rings advance lazily, only when their key is
  touched).  Used for per-action rates and per-fingerprint repetition.
* `DistinctWindow`: distinct keys touched within one horizon (fan-out).  Entries
  are kept ordered by last touch, so expiry is a prefix cut found by bisection
  and eviction at capacity drops the oldest.  Its count is exactly
  ``min(distinct keys in the window, cap)``: an evicted key was older than every
  key kept, so whenever the true count is back under the cap it has expired too.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left

from holdgate.models.windows import Horizon, WindowSet

__all__ = ["find_key", "KeyedWindows", "DistinctWindow"]


def find_key(keys: bytearray, key: bytes) -> int:
    """Index of ``key`` in a packed table of equal-size keys, or -1.

    >>> find_key(bytearray(b"aabbcc"), b"bb"), find_key(bytearray(b"abba"), b"bb")
    (1, -1)
    """
    size = len(key)
    i = keys.find(key)
    while i != -1 and i % size:  # a match straddling two keys is not a key
        i = keys.find(key, i + 1)
    return -1 if i == -1 else i // size


class KeyedWindows:
    """Geometry and operations of a capped key -> rings table (LRU by event time)."""

    __slots__ = ("windows", "key_size")

    def __init__(self, windows: WindowSet, key_size: int = 8) -> None:
        self.windows = windows
        self.key_size = key_size

    def observe(self, keys: bytearray, lasts: array, rings: array, key: bytes,
                now_ms: int, cap: int, add: int | tuple[int, ...] = 1
                ) -> tuple[list[int], bool]:
        """Record one event for ``key`` at ``now_ms``; return (window counts, was_new).

        A key not in the table takes a fresh slot; at capacity the slot touched
        longest ago (first one on ties) is forgotten, so memory never grows.
        """
        i = find_key(keys, key)
        fresh = i < 0
        if fresh:
            while len(lasts) >= max(cap, 1):
                self.remove(keys, lasts, rings, lasts.index(min(lasts)))
            i = len(lasts)
            keys += key
            lasts.append(now_ms)
            rings.extend(self.windows.new())
        counts = self.windows.observe(rings, i * self.windows.size, lasts[i], now_ms, add)
        lasts[i] = now_ms
        return counts, fresh

    def remove(self, keys: bytearray, lasts: array, rings: array, i: int) -> None:
        """Drop slot ``i`` from the three parallel buffers."""
        ks, rs = self.key_size, self.windows.size
        del keys[i * ks:(i + 1) * ks]
        del lasts[i]
        del rings[i * rs:(i + 1) * rs]


class DistinctWindow:
    """Count of distinct keys touched within a horizon, saturating at a cap.

    >>> dw = DistinctWindow(Horizon(5000, 12), key_size=1)
    >>> keys, buckets = bytearray(), array("I")
    >>> [dw.touch(keys, buckets, k, 0, cap=2) for k in (b"a", b"b", b"a", b"c")]
    [1, 2, 2, 2]
    >>> dw.touch(keys, buckets, b"d", 70_000, cap=2)   # a, b, c expired
    1
    """

    __slots__ = ("horizon", "key_size")

    def __init__(self, horizon: Horizon, key_size: int = 4) -> None:
        self.horizon = horizon
        self.key_size = key_size

    def expire(self, keys: bytearray, buckets: array, now_ms: int) -> None:
        """Drop keys whose last touch left the window (a prefix, by ordering)."""
        cutoff = now_ms // self.horizon.width_ms - self.horizon.buckets
        if buckets and buckets[0] < cutoff:
            j = bisect_left(buckets, cutoff)
            del buckets[:j]
            del keys[:j * self.key_size]

    def touch(self, keys: bytearray, buckets: array, key: bytes, now_ms: int,
              cap: int) -> int:
        """Record ``key`` at ``now_ms`` (never earlier than the previous touch) and
        return the distinct count in the window, including ``key``."""
        self.expire(keys, buckets, now_ms)
        now_b = now_ms // self.horizon.width_ms
        ks = self.key_size
        i = find_key(keys, key)
        last = len(buckets) - 1
        if i == last and i >= 0:
            buckets[i] = now_b
        else:
            if i >= 0:
                del buckets[i]
                del keys[i * ks:(i + 1) * ks]
            while len(buckets) >= max(cap, 1):
                del buckets[0]
                del keys[:ks]
            keys += key
            buckets.append(now_b)
        return len(buckets)

    def count(self, keys: bytearray, buckets: array, now_ms: int) -> int:
        """Distinct keys in the window as of ``now_ms`` (expires, records nothing)."""
        self.expire(keys, buckets, now_ms)
        return len(buckets)
