"""The per-action counter updates of `SignalComputer`, unrolled over the fixed geometry.

Why unrolled: `WindowSet`, `KeyedWindows` and `DistinctWindow` define what the
counters mean (and are what the tests of the windows exercise), but walking
their generic plans costs more than the rest of a decision's signals together.
Here is the same arithmetic written out for the geometry of
`holdgate.models.layout` (three rate horizons, one repeat horizon, two fan-out
windows), on the plain lists of a decoded `AgentState`, with a running total per
horizon so a count is one read.  The frozen reference in
``tests/models/reference_signals.py`` holds every function here to the generic
version, signal for signal.

Keyed tables are LRU by event time: at the cap the entry touched longest ago
goes, the first in the table on ties (words: larger is older, see `AgentState`).
A ring that is None is all zero: an entry just added, or dead (every window
expired), starts from zero exactly as the generic code would after advancing it.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from holdgate.models.layout import (
    ACTIONS, FANOUT, FANOUT_10M, FINGERPRINTS, RATE_PLAN, REPEAT_PLAN,
)
from holdgate.models.rings import ring_list
from holdgate.models.windows import COUNTER_MAX

if TYPE_CHECKING:
    from holdgate.models.state import AgentState

__all__ = ["tick", "advance", "touch_action", "touch_fingerprint", "allow_action", "fan_touch"]

# The code below is written for this geometry; holdgate.models.layout defines it.
assert [(w, n) for _, w, n in RATE_PLAN] == [(100, 11), (5_000, 13), (300_000, 13)]
assert [(w, n) for _, w, n in REPEAT_PLAN] == [(1_000, 11)]
assert (FANOUT.horizon.width_ms, FANOUT.horizon.buckets) == (5_000, 12)
assert (FANOUT_10M.horizon.width_ms, FANOUT_10M.horizon.buckets) == (50_000, 12)
assert ACTIONS.key_size == FINGERPRINTS.key_size == 8 and FANOUT.key_size == 4

_Z11 = [0] * 11
_Z13 = [0] * 13
_ZS = [[0] * i for i in range(14)]
_MAXC = COUNTER_MAX
#: bytes.translate tables: _SUB[k][x] == (x - k) & 0xFF
_SUB = [bytes((x - k) & 0xFF for x in range(256)) for k in range(256)]


def tick(r: list[int], last: int, now: int) -> tuple[int, int, int]:
    """RATES rings advanced from `last` to `now`, one event added to the 1 s and 60 s
    horizons (the 1 h one counts allowed actions, in `record_outcomes`); the counts.

    ``r[37:40]`` are the horizons' running totals (see `holdgate.models.rings`)."""
    nb = now // 100
    s = nb - last // 100
    t = r[37]
    if s:
        if s >= 11:
            r[0:11] = _Z11
            t = 0
        elif s < 4:
            for b in range(nb - s + 1, nb + 1):
                j = b % 11
                t -= r[j]
                r[j] = 0
        else:
            t = _zero(r, 0, 11, nb - s + 1, s)
    i = nb % 11
    if r[i] < _MAXC:
        r[i] += 1
        t += 1
    r[37] = c1 = t
    nb = now // 5_000
    s = nb - last // 5_000
    t = r[38]
    if s:
        if s >= 13:
            r[11:24] = _Z13
            t = 0
        elif s < 4:
            for b in range(nb - s + 1, nb + 1):
                j = 11 + b % 13
                t -= r[j]
                r[j] = 0
        else:
            t = _zero(r, 11, 13, nb - s + 1, s)
    i = 11 + nb % 13
    if r[i] < _MAXC:
        r[i] += 1
        t += 1
    r[38] = c60 = t
    nb = now // 300_000
    s = nb - last // 300_000
    if s:
        if s >= 13:
            r[24:37] = _Z13
            r[39] = 0
        elif s < 4:
            t = r[39]
            for b in range(nb - s + 1, nb + 1):
                j = 24 + b % 13
                t -= r[j]
                r[j] = 0
            r[39] = t
        else:
            r[39] = _zero(r, 24, 13, nb - s + 1, s)
    return c1, c60, r[39]


def _zero(r: list[int], off: int, n: int, first: int, count: int) -> int:
    """Zero `count` (< n) slots from bucket `first` on (circularly); the new total."""
    a = first % n
    if a + count <= n:
        r[off + a:off + a + count] = _ZS[count]
    else:
        r[off + a:off + n] = _ZS[n - a]
        r[off:off + a + count - n] = _ZS[a + count - n]
    return sum(r[off:off + n])


def advance(r: list[int], last: int, now: int) -> None:
    """RATES rings advanced from `last` to `now`, nothing added (totals kept)."""
    for k, (off, w, n) in enumerate(RATE_PLAN):
        nb = now // w
        s = nb - last // w
        if s >= n:
            r[off:off + n] = _ZS[n]
            r[37 + k] = 0
        elif s:
            r[37 + k] = _zero(r, off, n, nb - s + 1, s)


def touch_action(st: AgentState, akey: bytes, now: int, cap: int) -> tuple[int, int, int]:
    """One attempt of action `akey` at `now` (``ACTIONS.observe`` with the 1 s and
    60 s horizons counting it): its counts, the 1 h one without it."""
    keys = st.act_keys
    i = keys.find(akey)
    while i & 7 and i != -1:
        i = keys.find(akey, i + 1)
    words, rings, base = st.act_words, st.act_rings, st.base
    if i >= 0:
        i >>= 3
        ring = rings[i]
        if isinstance(ring, bytes):
            ring = ring_list(ring, RATE_PLAN)
        if ring is not None:
            counts = tick(ring, base - words[i], now)
            rings[i] = ring
            words[i] = base - now
            return counts
    else:
        while len(words) >= cap:                  # the oldest, the first on ties
            j = words.index(max(words))
            del keys[8 * j:8 * j + 8], words[j], rings[j]
        keys += akey
        words.append(base - now)
        rings.append(None)
        i = len(words) - 1
    ring = rings[i] = [0] * 40                    # new, forgotten or dead: from zero
    ring[now // 100 % 11] = ring[11 + now // 5_000 % 13] = ring[37] = ring[38] = 1
    words[i] = base - now
    return 1, 1, 0


def touch_fingerprint(st: AgentState, fp: bytes, now: int, cap: int) -> int:
    """One attempt with fingerprint `fp` at `now` (``FINGERPRINTS.observe``): its count."""
    keys = st.fp_keys
    i = keys.find(fp)
    while i & 7 and i != -1:
        i = keys.find(fp, i + 1)
    words, rings, base = st.fp_words, st.fp_rings, st.base
    nb = now // 1000
    if i >= 0:
        i >>= 3
        ring = rings[i]
        if isinstance(ring, bytes):
            ring = ring_list(ring, REPEAT_PLAN)
        if ring is not None:
            s = nb - (base - words[i]) // 1000
            repeat = ring[11]
            if s:
                if s >= 11:
                    ring[0:11] = _Z11
                    repeat = 0
                elif s < 4:
                    for b in range(nb - s + 1, nb + 1):
                        j = b % 11
                        repeat -= ring[j]
                        ring[j] = 0
                else:
                    repeat = _zero(ring, 0, 11, nb - s + 1, s)
            j = nb % 11
            if ring[j] < _MAXC:
                ring[j] += 1
                repeat += 1
            ring[11] = repeat
            rings[i] = ring
            words[i] = base - now
            return repeat
    else:
        while len(words) >= cap:
            j = words.index(max(words))
            del keys[8 * j:8 * j + 8], words[j], rings[j]
        keys += fp
        words.append(base - now)
        rings.append(None)
        i = len(words) - 1
    ring = rings[i] = [0] * 12
    ring[nb % 11] = ring[11] = 1
    words[i] = base - now
    return 1


def allow_action(st: AgentState, akey: bytes, cap: int) -> None:
    """An allowed action at the agent clock: one more in the 1 h windows of the agent
    and of action `akey` (``RATES`` / ``ACTIONS.observe`` adding to the 1 h horizon)."""
    now = int(st.clock * 1000.0)
    slot = 24 + now // 300_000 % 13
    r = st.rates                 # the agent's rings are always at its clock
    if r[slot] < _MAXC:
        r[slot] += 1
        r[39] += 1
    keys, words, rings, base = st.act_keys, st.act_words, st.act_rings, st.base
    i = keys.find(akey)
    while i & 7 and i != -1:
        i = keys.find(akey, i + 1)
    if i < 0:
        while len(words) >= cap:
            j = words.index(max(words))
            del keys[8 * j:8 * j + 8], words[j], rings[j]
        fresh = [0] * 40
        fresh[slot] = fresh[39] = 1
        keys += akey
        words.append(base - now)
        rings.append(fresh)
        return
    i >>= 3
    ring = rings[i]
    if isinstance(ring, bytes):
        ring = ring_list(ring, RATE_PLAN)
    if ring is None:
        ring = [0] * 40
    elif words[i] != base - now:
        advance(ring, base - words[i], now)
    if ring[slot] < _MAXC:
        ring[slot] += 1
        ring[39] += 1
    rings[i] = ring
    words[i] = base - now


def fan_touch(keys: bytearray, rel: bytearray, origin: int, key: bytes, now_b: int,
               cap: int) -> tuple[int, int, bytearray] | int:
    """`DistinctWindow.touch` (12 buckets) on byte offsets from `origin`: the count, or
    (count, origin, rel) when the offsets had to be rebased (a new `rel`)."""
    r = now_b - origin
    if rel and rel[0] < r - 12:                       # expired: a prefix (ordered)
        j = bisect_left(rel, r - 12)
        del rel[:j]
        del keys[:4 * j]
    if r > 255:                                       # keep offsets in a byte
        c = rel[0] if rel else r - 12
        rel = bytearray(rel.translate(_SUB[c])) if rel else bytearray()
        origin += c
        count = _fan_insert(keys, rel, key, r - c, cap)
        return count, origin, rel
    return _fan_insert(keys, rel, key, r, cap)


def _fan_insert(keys: bytearray, rel: bytearray, key: bytes, r: int, cap: int) -> int:
    i = keys.find(key)
    while i & 3 and i != -1:
        i = keys.find(key, i + 1)
    n = len(rel)
    if i >= 0:
        i >>= 2
        if i == n - 1:
            rel[i] = r
            return n
        del rel[i]
        del keys[4 * i:4 * i + 4]
        n -= 1
    if n >= cap:
        cut = n - cap + 1
        del rel[:cut]
        del keys[:4 * cut]
        n -= cut
    keys += key
    rel.append(r)
    return n + 1
