"""The binary codec of `AgentState`: compact, versioned, parsed field by field.

Why this shape: the worker keeps one encoded state per agent in its store and
decodes only the agents a batch touches, so the *blob* is what 100,000 agents
cost in memory, and decode + encode is paid once per touched agent per batch.
The blob is therefore compact (small integers in one byte, nothing that can no
longer change a signal), and decoding is a handful of bulk copies: rings of
entries a batch does not touch stay undecoded chunks (`holdgate.models.rings`)
and are written back as they were read.  Never pickle: a blob is parsed field
by field and anything inconsistent (magic, version, lengths, counts, CRC,
impossible values) raises `ModelError`, which the stream turns into a
STATE_RECOVERING deny, never into executed bytes.

What is left out can no longer change any signal (argued at `keyed_parts` and
`fan_parts` in `holdgate.models.codec_tables`; the differential tests against
the frozen reference in ``tests/models/test_signals_reference.py`` hold it to
that):

* a keyed entry (action or fingerprint) whose every window has expired at the
  agent clock ("dead") keeps its key and its place in the table (a key seen
  again resumes that place, and places break ties in LRU eviction) but not its
  rings (zero when it is touched again) nor its time: only the order of dead
  entries among themselves can still matter, so a rank replaces it;
* times are ages from the agent clock (a live action is under 66 minutes old,
  a live fingerprint under 11 s); fan-out buckets are distances from the
  clock's bucket (at most 12);
* the 60 s and 10 min fan-out tables are both suffixes of one sequence of keys
  ordered by last touch, so the longer one's keys are stored once, and the
  10-minute distances of the keys they share follow from their 60 s ones;
* counters are bytes when they fit; a fingerprint's ring keeps only the span
  of non-zero slots; the Bloom filter lists its set bits while few; the online
  baseline is left out while all zero (a fitted model never uses it); the last
  fingerprint is an index into the fingerprint table when it is there.

Layout v3 (little endian; v1 and v2 of earlier releases still decode, see
`holdgate.models.codec_v2`)::

    header        <4sBBdIIBHBBBHBH> (33 B): magic "HGAS", version 3, flags, clock
                  (float64 s), streak, deny_mask, deny_n, bloom_items, n_recent,
                  n_actions, n_fingerprints, n_fanout (u16), n_fan10, bloom_len
    last_fp       uint8 index into the fingerprints (flags & 4), else 8 B
    recent        8 B x n_recent: blake2b-64 of the last decided request ids
    rates         ring chunk: the agent's 1 s / 60 s / 1 h rings
    baseline      float64 x PARAMS_LEN (flags & 1)
    bloom         uint16 x bloom_len set-bit indexes, or the 256 B bitmap (0xFFFF)
    actions       key 8 B x n | word uint32 x n | n_live uint8 | live index
                  uint8 x n_live | ring chunk per live entry      (when n > 0)
    fingerprints  the same with uint16 words                      (when n > 0)
    fan-out keys  4 B x max(n_fanout, n_fan10), the shorter table being the tail
                  of the longer (flags & 2); else n_fanout keys, then n_fan10
    distances     uint8 x n_fanout (clock's 5 s bucket - key's), then uint8 x
                  n_fan10 (50 s buckets); with flags & 8 only the first
                  n_fan10 - min(n_fanout, n_fan10) of those (the shared keys'
                  follow from their 60 s distances)
    crc32         uint32 over everything before it

    word          live: age in ms (clock_ms - last_ms); dead: ACT_DEAD / FP_DEAD
                  and up, a rank (larger = older)
"""
from __future__ import annotations

import math
import struct
import zlib
from array import array
from typing import TYPE_CHECKING, Any, TypeVar

from holdgate.errors import ModelError
from holdgate.models.codec_tables import D10, F_DERIVED, F_SHARED, WORDS, fan_offsets, fan_parts, \
    keyed_parts
from holdgate.models.codec_v2 import decode_v2
from holdgate.models.layout import (
    ACT_DEAD, FANOUT, FANOUT_10M, FANOUT_10M_CAP, FP_DEAD, HARD_MAX_FANOUT, HARD_MAX_KEYED,
    RATE_PLAN, RATES, RECENT_IDS, REPEAT_PLAN, dead_limit,
)
from holdgate.models.rings import Ring, chunk_max, le_bytes, new_ring, ring_list
from holdgate.models.scorer import PARAMS_LEN, params_ok
from holdgate.models.sketch import BLOOM_DENSE, NOVELTY_BLOOM, bloom_from, bloom_section

if TYPE_CHECKING:
    from holdgate.models.state import AgentState

__all__ = ["CODEC_VERSION", "MAGIC", "encode", "decode", "serialized_bound"]

CODEC_VERSION = 3
MAGIC = b"HGAS"
S = TypeVar("S", bound="AgentState")

_HEAD = struct.Struct("<4sBBdIIBHBBBHBH")
_CRC = struct.Struct("<I")
_BLOOM_BYTES = NOVELTY_BLOOM.nbytes
_F_BASELINE, _F_LAST_FP = 1, 4            # and F_SHARED (2), F_DERIVED (8): codec_tables
_PARAMS = struct.Struct(f"<{PARAMS_LEN}d")
_FAN_W, _FAN_B = FANOUT.horizon.width_ms, FANOUT.horizon.buckets
_F10_W, _F10_B = FANOUT_10M.horizon.width_ms, FANOUT_10M.horizon.buckets
_ACT_LONG, _FP_LONG = dead_limit(RATE_PLAN), dead_limit(REPEAT_PLAN)
_ACT_CHUNK, _FP_CHUNK = chunk_max(RATE_PLAN), chunk_max(REPEAT_PLAN)
_NRATES = RATES.size
_RATES_U8 = bytes((1 + _NRATES, 3))
_RATES_U16 = bytes((1 + 2 * _NRATES, 2))
_INCONSISTENT = (struct.error, IndexError, ValueError, OverflowError)


def serialized_bound(max_actions: int, max_fingerprints: int, max_fanout: int) -> int:
    """Largest `encode` length of a state within the given caps.

    Every part at its largest, which one state can reach at once (a test builds
    it): the last fingerprint spelled out rather than indexed, all the recent
    ids, rates with a counter above 255 (uint16), the online baseline, the dense
    Bloom bitmap; every keyed entry live, with a uint16 ring chunk and its index
    in the table's live list (plus that list's length byte); both fan-out tables
    full and stored apart (states the signal computer writes always share their
    keys, see `fan_parts`, but the codec does not count on it).  A decoded blob
    cannot do worse: its ring chunks are re-emitted as read only if no longer
    than `ring_chunk` writes them (checked on decoding).  Caps bound the tables
    from the next new key on: a state written under larger caps keeps its extra
    entries until then.
    """
    return (_HEAD.size + 8 + 8 * RECENT_IDS + _ACT_CHUNK + _PARAMS.size + _BLOOM_BYTES
            + 1 + max_actions * (8 + 4 + 1 + _ACT_CHUNK)
            + 1 + max_fingerprints * (8 + 2 + 1 + _FP_CHUNK)
            + (max_fanout + FANOUT_10M_CAP) * (4 + 1) + _CRC.size)


def encode(st: AgentState) -> bytes:
    """`AgentState.to_bytes`: the state in layout v3 (see the module docstring).

    Rebases the keyed tables on the clock on the way (ages from now, entries
    that have died since ranked): the same state, written as it will be read.
    """
    n_act, n_fp, n60, n10 = (len(st.act_words), len(st.fp_words), len(st.fan_rel),
                             len(st.fan10_rel))
    if n_act > HARD_MAX_KEYED or n_fp > HARD_MAX_KEYED or n60 > HARD_MAX_FANOUT \
            or n10 > FANOUT_10M_CAP:
        raise ModelError("agent state exceeds the codec's hard limits")
    clock_ms = int(st.clock * 1000.0)
    delta = clock_ms - st.base
    recent = st.recent
    parts: list[Any] = [b"", b"", recent]
    rates = st.rates
    if max(rates[_NRATES:]) > 255 and max(rates[:_NRATES]) > 255:    # totals first
        parts += (_RATES_U16, le_bytes(array("H", rates[:_NRATES])))
    else:
        parts += (_RATES_U8, bytes(rates[:_NRATES]))
    baseline = st.baseline
    flags = 0
    if any(baseline):
        flags = _F_BASELINE
        parts.append(_PARAMS.pack(*baseline))
    bloom_len, bloom = bloom_section(st.bloom)
    parts.append(bloom)
    words = st.act_words
    if words:
        keyed_parts(parts, st.act_keys, words, st.act_rings, delta, clock_ms,
                    _ACT_LONG, ACT_DEAD, "I", RATE_PLAN)
    words = st.fp_words
    if words:
        keyed_parts(parts, st.fp_keys, words, st.fp_rings, delta, clock_ms,
                    _FP_LONG, FP_DEAD, "H", REPEAT_PLAN)
    st.base = clock_ms
    last_fp = st.last_fp
    i = st.fp_keys.find(last_fp)
    while i & 7 and i != -1:
        i = st.fp_keys.find(last_fp, i + 1)
    if i >= 0:                              # the last fingerprint is in the table
        flags |= _F_LAST_FP
        parts[1] = bytes((i >> 3,))
    else:
        parts[1] = last_fp
    flags |= fan_parts(parts, st, clock_ms)
    parts[0] = _HEAD.pack(MAGIC, CODEC_VERSION, flags, st.clock, st.streak,
                          st.deny_mask, st.deny_n, min(st.bloom_items, 0xFFFF),
                          len(recent) >> 3, n_act, n_fp, n60, n10, bloom_len)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode(cls: type[S], blob: bytes | bytearray | memoryview) -> S:
    """`AgentState.from_bytes`: a state of class `cls` from a v3 blob, or a v1/v2 one
    of earlier releases; anything inconsistent raises `ModelError`."""
    b = blob if type(blob) is bytes else bytes(memoryview(blob).cast("B"))
    if len(b) < 5 + _CRC.size:
        raise ModelError(f"agent state blob too short ({len(b)} bytes)")
    if b[:4] != MAGIC:
        raise ModelError("not an agent state blob (bad magic)")
    version = b[4]
    if version in (1, 2):
        try:
            return decode_v2(cls, b, version)
        except _INCONSISTENT as exc:
            raise ModelError(f"agent state blob is inconsistent: {exc}") from None
    if version != CODEC_VERSION:
        raise ModelError(f"agent state codec v{version} not supported (v{CODEC_VERSION})")
    end = len(b) - _CRC.size
    if zlib.crc32(memoryview(b)[:end]) != _CRC.unpack_from(b, end)[0]:
        raise ModelError("agent state blob failed its CRC check (corrupt)")
    try:
        return _decode_v3(cls, b, end)
    except _INCONSISTENT as exc:
        raise ModelError(f"agent state blob is inconsistent: {exc}") from None


def _decode_v3(cls: type[S], b: bytes, end: int) -> S:
    (_, _, flags, clock, streak, deny_mask, deny_n, bloom_items, n_recent, n_act, n_fp,
     n60, n10, bloom_len) = _HEAD.unpack_from(b, 0)
    if not math.isfinite(clock) or clock < 0 or deny_n > 32 or n_recent > RECENT_IDS \
            or n10 > FANOUT_10M_CAP:
        raise ModelError("agent state blob holds impossible values")
    st = cls.__new__(cls)
    st.clock, st.streak, st.deny_mask, st.deny_n = clock, streak, deny_mask, deny_n
    st.bloom_items = bloom_items
    clock_ms = st.base = int(clock * 1000.0)
    off = _HEAD.size
    if flags & _F_LAST_FP:
        last_fp = b[off]
        off += 1
    else:
        st.last_fp = b[off:off + 8]
        off += 8
    st.recent = bytearray(b[off:off + 8 * n_recent])
    off += 8 * n_recent
    nxt = off + 1 + b[off]
    if nxt - off > _ACT_CHUNK:
        raise ModelError("agent state blob holds impossible values")
    if b[off + 1] == 3 and nxt - off == 2 + RATES.size:       # dense bytes, as written
        r = list(b[off + 2:nxt])
        r += (sum(r[0:11]), sum(r[11:24]), sum(r[24:37]))
        st.rates = r
    else:
        st.rates = ring_list(b[off:nxt], RATE_PLAN) or new_ring(RATE_PLAN)
    off = nxt
    if flags & _F_BASELINE:
        params = _PARAMS.unpack_from(b, off)
        if not params_ok(params):
            raise ModelError("agent state blob holds impossible values")
        st.baseline = list(params)
        off += _PARAMS.size
    else:
        st.baseline = [0.0] * PARAMS_LEN
    size = _BLOOM_BYTES if bloom_len == BLOOM_DENSE else 2 * bloom_len
    if size > _BLOOM_BYTES:
        raise ModelError("agent state blob holds impossible values")
    st.bloom = bloom_from(b[off:off + size], bloom_len)
    off += size
    if n_act:
        st.act_keys, st.act_words, st.act_rings, off = _decode_keyed(b, off, n_act, "I", _ACT_CHUNK)
    else:
        st.act_keys, st.act_words, st.act_rings = bytearray(), [], []
    if n_fp:
        st.fp_keys, st.fp_words, st.fp_rings, off = _decode_keyed(b, off, n_fp, "H", _FP_CHUNK)
    else:
        st.fp_keys, st.fp_words, st.fp_rings = bytearray(), [], []
    if flags & _F_LAST_FP:
        if last_fp >= n_fp:
            raise ModelError("agent state blob holds impossible values")
        st.last_fp = bytes(st.fp_keys[8 * last_fp:8 * last_fp + 8])
    if flags & F_SHARED:
        nk = n60 if n60 > n10 else n10
        keys = b[off:off + 4 * nk]
        st.fan_keys = bytearray(keys[4 * (nk - n60):])
        st.fan10_keys = bytearray(keys[4 * (nk - n10):])
    else:
        nk = n60 + n10
        keys = b[off:off + 4 * nk]
        st.fan_keys, st.fan10_keys = bytearray(keys[:4 * n60]), bytearray(keys[4 * n60:])
    off += 4 * nk
    st.fan_origin = clock_ms // _FAN_W - _FAN_B
    st.fan_rel = fan_offsets(b[off:off + n60], n60, _FAN_B)
    off += n60
    st.fan10_origin = clock_ms // _F10_W - _F10_B
    if flags & F_DERIVED:                  # the shared keys' from the 60 s distances
        m = min(n60, n10)
        dist = b[off:off + n10 - m] + b[off - m:off].translate(D10[clock_ms // _FAN_W % 10])
        off += n10 - m
    else:
        dist = b[off:off + n10]
        off += n10
    st.fan10_rel = fan_offsets(dist, n10, _F10_B)
    if off != end or len(keys) != 4 * nk:
        raise ModelError(f"agent state blob is {len(b)} bytes, its header implies "
                         f"{off + _CRC.size}")
    return st


def _decode_keyed(b: bytes, off: int, n: int, code: str, longest: int
                  ) -> tuple[bytearray, list[int], list[Ring], int]:
    """One keyed table: keys, words, and each live entry's ring chunk (kept as
    bytes until touched; none longer than `longest`, so none is re-emitted longer
    than `ring_chunk` would write it)."""
    keys = bytearray(b[off:off + 8 * n])
    off += 8 * n
    unpack = WORDS[code][n]
    words = list(unpack.unpack_from(b, off))
    off += unpack.size
    n_live = b[off]
    live = b[off + 1:off + 1 + n_live]
    off += 1 + n_live
    if len(keys) != 8 * n or len(live) != n_live or n_live and live[-1] >= n:
        raise ModelError("agent state blob is truncated")
    longest -= 1                                    # the length byte counts the rest
    if n_live == n:
        rings: list[Ring] = []
        for _ in live:
            size = b[off]
            if size > longest:
                raise ModelError("agent state blob holds impossible values")
            nxt = off + 1 + size
            rings.append(b[off:nxt])
            off = nxt
    else:
        rings = [None] * n
        for i in live:
            size = b[off]
            if size > longest:
                raise ModelError("agent state blob holds impossible values")
            nxt = off + 1 + size
            rings[i] = b[off:nxt]
            off = nxt
    return keys, words, rings, off
