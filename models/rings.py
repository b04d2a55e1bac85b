"""Ring counters as the signal computer holds them, and as the codec stores them.

Why lists and chunks rather than ``array('H')`` segments: the hot path reads and
bumps a few counters per action, which is cheapest on a plain list, and keeps a
running total per horizon so that a window count is one read, not a sum.  On
disk a ring is a self-delimited *chunk*, as small as its counters allow; a keyed
entry the batch does not touch keeps its chunk (``bytes``) and is written back
as read, so an agent's rarely used actions cost no decoding at all.

In memory a ring is a flat list over the horizons of its plan followed by one
running total per horizon (never stored).  A keyed entry's ring may also be
``None`` (all zero) or, until touched, its chunk.  Chunk layout::

    length byte (of what follows), kind byte, then by kind:
      0  all zero (nothing follows)
      1  per horizon: start, count, then count counters as bytes (one-horizon rings)
      2  every counter as uint16, little endian (some counter above 255)
      3  every counter as a byte

Parsing never fails: a chunk that does not fit its plan (only a blob forged with
a valid CRC can hold one) reads as some ring of the right size.
"""
from __future__ import annotations

import sys
from array import array

from holdgate.models.layout import Plan

__all__ = ["Ring", "ZERO_CHUNK", "ring_chunk", "ring_list", "with_totals", "new_ring", "chunk_max",
           "le_array", "le_bytes"]

#: A keyed entry's ring: counters and totals, its stored chunk until touched, or all zero.
Ring = list[int] | bytes | None
ZERO_CHUNK = b"\x01\x00"
_ZEROS = [[0] * i for i in range(256)]
_SWAP = sys.byteorder != "little"


def le_array(typecode: str, raw: bytes | memoryview) -> array:
    """An array of little-endian items (as stored), in host order."""
    a = array(typecode)
    a.frombytes(raw)
    if _SWAP:  # pragma: no cover - big-endian hosts only
        a.byteswap()
    return a


def le_bytes(a: array) -> bytes:
    """An array's items as little-endian bytes (as stored)."""
    if _SWAP:  # pragma: no cover - big-endian hosts only
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def chunk_max(plan: Plan) -> int:
    """Longest chunk `ring_chunk` writes for this plan (kind 2: every counter uint16)."""
    return 2 + 2 * (plan[-1][0] + plan[-1][2])


def ring_chunk(ring: list[int] | None, plan: Plan) -> bytes:
    """A ring (with its totals) as a self-delimited chunk: a one-horizon ring as
    kind 1 (its few counters), a several-horizon one as kind 3 (dense bytes:
    cheaper to write and read back, and its horizons are rarely empty); kind 2
    when a counter > 255 (no counter can be while every total is not)."""
    if ring is None or not any(ring):
        return ZERO_CHUNK
    size = plan[-1][0] + plan[-1][2]
    if max(ring[size:]) > 255 and max(ring[:size]) > 255:   # totals first: cheaper
        out = le_bytes(array("H", ring[:size]))
        return bytes((1 + len(out), 2)) + out
    dense = bytes(ring[:size])
    if len(plan) > 1:
        return bytes((1 + size, 3)) + dense
    body = dense.strip(b"\x00")
    return bytes((3 + len(body), 1, dense.find(body), len(body))) + body


def with_totals(ring: list[int], plan: Plan) -> list[int]:
    """Append the running total of each horizon (the layout the hot path counts on)."""
    if len(plan) == 3:
        (a, _, n), (b, _, m), (c, _, k) = plan
        ring += (sum(ring[a:a + n]), sum(ring[b:b + m]), sum(ring[c:c + k]))
    else:
        ring += [sum(ring[off:off + n]) for off, _, n in plan]
    return ring


def new_ring(plan: Plan) -> list[int]:
    """A zeroed ring with its totals."""
    return [0] * (plan[-1][0] + plan[-1][2] + len(plan))


def ring_list(chunk: bytes, plan: Plan) -> list[int] | None:
    """The ring a chunk holds, totals appended (None: all zero)."""
    kind = chunk[1] if len(chunk) > 1 else 0
    size = plan[-1][0] + plan[-1][2]
    if kind == 3:
        out = list(chunk[2:2 + size])
    elif kind == 1:
        out = [0] * (size + len(plan))
        p, end, k = 2, len(chunk), size
        for off, _, n in plan:
            if p + 1 >= end:
                break
            start, count = chunk[p], chunk[p + 1]
            if start + count > n:
                start = min(start, n)
                count = n - start
            seg = chunk[p + 2:p + 2 + count]
            out[off + start:off + start + len(seg)] = seg
            out[k] = sum(seg)
            k += 1
            p += 2 + count
        return out
    elif kind == 2:
        raw = chunk[2:2 + 2 * size]
        out = le_array("H", raw[:len(raw) & ~1]).tolist()
    else:
        return None
    if len(out) < size:
        out += _ZEROS[size - len(out)]
    return with_totals(out, plan)
