"""How the codec writes an agent's keyed and fan-out tables small.

Why apart from `holdgate.models.codec`: this is where the codec leaves out what
can no longer change a signal, and each omission comes with its argument; the
rest of the codec only lays fields out.  Keyed tables (actions, fingerprints)
are rebased on the agent clock, their dead entries ranked instead of timed and
stripped of their rings (`keyed_parts`); the two fan-out tables share their keys
and, mostly, their distances (`fan_parts`).  The differential tests against the
frozen reference (``tests/models/test_signals_reference.py``) run states through
this at random points and check every later signal.
"""
from __future__ import annotations

import struct
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from holdgate.errors import ModelError
from holdgate.models.layout import FANOUT, FANOUT_10M, Plan
from holdgate.models.rings import Ring, ring_chunk

if TYPE_CHECKING:
    from holdgate.models.state import AgentState

__all__ = ["keyed_parts", "fan_parts", "fan_offsets", "F_SHARED", "F_DERIVED", "RSUB", "D10",
           "WORDS"]

#: flags of the header set by `fan_parts`: keys shared; shared keys' 10 min distances left out
F_SHARED, F_DERIVED = 2, 8
#: bytes.translate tables: RSUB[k][x] == (k - x) & 0xFF (distances <-> offsets at once)
RSUB = [bytes((k - x) & 0xFF for x in range(256)) for k in range(256)]
#: D10[r][d]: the 10-minute distance of a key at 60 s distance d when the clock's 60 s
#: bucket is r mod 10: ceil((d - r) / 10)
D10 = [bytes(-((r - d) // 10) & 0xFF for d in range(256)) for r in range(10)]
#: WORDS[code][n]: n words of struct type `code` ("I" actions, "H" fingerprints)
WORDS = {code: [struct.Struct(f"<{n}{code}") for n in range(256)] for code in "HI"}
#: _ALL_LIVE[n]: the live list of a table of n entries all live
_ALL_LIVE = [bytes([n, *range(n)]) for n in range(256)]
_FAN_W, _FAN_B = FANOUT.horizon.width_ms, FANOUT.horizon.buckets
_F10_W, _F10_B = FANOUT_10M.horizon.width_ms, FANOUT_10M.horizon.buckets


def keyed_parts(parts: list[Any], keys: bytearray, words: list[int], rings: list[Ring],
                delta: int, clock_ms: int, long: tuple[int, int], dead: int, code: str,
                plan: Plan) -> None:
    """Append keys | words | live list | chunks of one (non-empty) keyed table to
    `parts`, rebasing `words` on the clock in place.

    Dead: the longest horizon has expired at the clock (``clock_b - last_b >=
    slots``), so every shorter one has too.  Touched again, a dead entry's rings
    start from zero (a step of a whole ring) at the place it holds, so its key and
    place are kept but not its rings, and instead of its time a rank: that time
    only ever meets other entries' times in eviction (the oldest first, the first
    place on ties), every live entry is younger (``last_b > clock_b - slots``) and
    every later touch later still, so the rank among dead entries (order and
    ties) is all eviction can see of it.  Entries that died since the last
    encoding are younger than every entry dead before, so they are ranked just
    below them and earlier ranks never move (until the rank space runs out).
    """
    width, slots = long
    limit = clock_ms % width + (slots - 1) * width + 1 - delta   # word >= limit: dead
    n = len(words)
    ordered = sorted(words)
    if ordered[-1] < limit:                # every entry live, and stays so: whole lists
        if delta:
            words[:] = [w + delta for w in words]
        parts += (keys, WORDS[code][n].pack(*words), _ALL_LIVE[n])
        rings[:] = [r if isinstance(r, bytes) else ring_chunk(r, plan) for r in rings]
        parts += rings                     # kept as written: smaller than lists
        return
    n_live = bisect_left(ordered, dead)
    if n_live == n:
        live = list(range(n))
    elif n_live <= 4:                      # few: found by value (ties: every place)
        live = []
        for w in set(ordered[:n_live]):
            i = words.index(w)
            while i >= 0:
                live.append(i)
                i = words.index(w, i + 1) if w in words[i + 1:] else -1
        live.sort()
    else:
        live = [i for i, w in enumerate(words) if w < dead]
    if n_live and ordered[n_live - 1] >= limit:
        died = [i for i in live if words[i] >= limit]
        _rank_dead(words, rings, died, delta, dead, ordered[n_live] if n_live < n else 2 * dead)
        live = [i for i in live if words[i] < dead]
    if delta:
        for i in live:
            words[i] += delta
    parts += (keys, WORDS[code][n].pack(*words), bytes([len(live), *live]))
    for i in live:
        r = rings[i]
        if not isinstance(r, bytes):
            r = rings[i] = ring_chunk(r, plan)
        parts.append(r)


def _rank_dead(words: list[int], rings: list[Ring], died: list[int], delta: int,
          dead: int, below: int) -> None:
    """Rank-code entries that just died, below (younger than) `below`, the youngest of
    the entries dead before them."""
    if len(died) == 1:
        if below - 1 >= dead:
            i = died[0]
            words[i] = below - 1
            rings[i] = None
            return
    ages = sorted({words[i] + delta for i in died}, reverse=True)     # oldest first
    if below - len(ages) >= dead:
        rank = {a: below - 1 - k for k, a in enumerate(ages)}
        for i in died:
            words[i] = rank[words[i] + delta]
            rings[i] = None
        return
    # rank space used up: rank every dead entry again from the top, keeping order
    older = sorted({w for w in words if w >= dead}, reverse=True)
    rank = {w: 2 * dead - 1 - k for k, w in enumerate(older)}
    young = {a: 2 * dead - 1 - len(older) - k for k, a in enumerate(ages)}
    died_set = set(died)
    for i, w in enumerate(words):
        if i in died_set:
            words[i] = young[w + delta]
            rings[i] = None
        elif w >= dead:
            words[i] = rank[w]


def fan_parts(parts: list[Any], st: AgentState, clock_ms: int) -> int:
    """Append the keys and distances of the two fan-out tables; the flags.

    Both are touched with the same key at the same time on every action, each
    is ordered by last touch and cut at the front (expiry, cap): so each is a
    suffix of one sequence of keys by last touch, and the shorter a suffix of the
    longer (checked here; both kept if ever not).  The clock is the last touch,
    where expired keys were cut: every distance from the clock's bucket is <= 12.
    """
    k60, k10 = st.fan_keys, st.fan10_keys
    if len(k10) <= len(k60) and k60.endswith(k10):
        flags = F_SHARED
        parts.append(k60)
    elif k10.endswith(k60):
        flags = F_SHARED
        parts.append(k10)
    else:
        flags = 0
        parts += (k60, k10)
    rel = st.fan_rel
    d60: bytes | bytearray = b""
    if rel:
        k = clock_ms // _FAN_W - st.fan_origin
        if not (k < 256 and rel[-1] <= k and k - rel[0] <= _FAN_B):
            raise ModelError("fan-out window out of step with the agent clock")
        d60 = rel.translate(RSUB[k])
        parts.append(d60)
    rel = st.fan10_rel
    if rel:
        k = clock_ms // _F10_W - st.fan10_origin
        if not (k < 256 and rel[-1] <= k and k - rel[0] <= _F10_B):
            raise ModelError("fan-out window out of step with the agent clock")
        d10 = rel.translate(RSUB[k])
        m = min(len(d60), len(d10))
        # a key in both tables was last touched at one time t: its 10-minute bucket
        # t // 50 s is its 60 s bucket t // 5 s divided by 10, so that distance
        # follows from the other (D10), and is left out when it does
        if flags and m and d10[-m:] == d60[-m:].translate(D10[clock_ms // _FAN_W % 10]):
            flags |= F_DERIVED
            d10 = d10[:-m]
        parts.append(d10)
    return flags


def fan_offsets(dist: bytes, n: int, buckets: int) -> bytearray:
    """Offsets from ``clock bucket - buckets`` of keys at these distances (decoding)."""
    if len(dist) != n or n and max(dist) > buckets:
        raise ModelError("agent state blob holds impossible values")
    return bytearray(dist.translate(RSUB[buckets]))
