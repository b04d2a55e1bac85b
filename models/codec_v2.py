"""Reading states that earlier releases wrote (codec v1 and v2), into today's form.

Why kept: a worker's per-agent states live in a compacted changelog, so a new
release first meets the blobs the previous one wrote.  They decode into the
current in-memory form (`holdgate.models.state.AgentState`) and are written back
in the current layout the next time the agent acts; the fixture in
``tests/models/data/state_v2.json`` (blobs the v2 code wrote, and the signals it
computed after them) holds this to the previous release's behaviour.
"""
from __future__ import annotations

import math
import struct
import zlib
from bisect import bisect_left
from typing import TYPE_CHECKING, TypeVar

from holdgate.errors import ModelError
from holdgate.models.layout import (
    ACT_DEAD, FANOUT, FANOUT_10M, FANOUT_10M_CAP, FP_DEAD, RATE_PLAN, RATES, RECENT_IDS, REPEAT,
    REPEAT_PLAN, dead_limit,
)
from holdgate.models.rings import le_array, with_totals
from holdgate.models.scorer import PARAMS_LEN, params_ok
from holdgate.models.sketch import NOVELTY_BLOOM

if TYPE_CHECKING:
    from holdgate.models.state import AgentState

__all__ = ["decode_v2"]

S = TypeVar("S", bound="AgentState")
_CRC = struct.Struct("<I")
_PARAMS = struct.Struct(f"<{PARAMS_LEN}d")
_BLOOM_BYTES = NOVELTY_BLOOM.nbytes
_FAN_W, _FAN_B = FANOUT.horizon.width_ms, FANOUT.horizon.buckets
_F10_W, _F10_B = FANOUT_10M.horizon.width_ms, FANOUT_10M.horizon.buckets
_HEAD_V2 = struct.Struct("<4sBBBBHHd8sII")
_ACT_V2 = 8 + 8 + 2 * RATES.size
_FP_V2 = 8 + 8 + 2 * REPEAT.size
_FIXED_V1 = _HEAD_V2.size + 2 * RATES.size + 8 * PARAMS_LEN + _BLOOM_BYTES + _CRC.size


def decode_v2(cls: type[S], b: bytes, version: int) -> S:
    """Layout v2 (v1: without the recent ids and the 10-minute fan-out)::

        header <4sBBBBHHd8sII> magic, version, n_actions, n_fingerprints, deny_n,
               n_fanout, bloom_items, clock, last_fp, streak, deny_mask
        (v2)   n_recent u8, recent 8 B each, n_fan10 u8, fan10 key 4 B | uint32 bucket
        rates uint16 x 37, baseline float64 x 9, bloom 256 B,
        actions key 8 B | last_ms int64 | rings uint16 x 37, fingerprints key 8 B |
        last_ms int64 | rings uint16 x 11, fan-out key 4 B | uint32 bucket, crc32

    Read into the v3 form: live keyed entries keep their time (as ages), dead ones
    are ranked, expired fan-out keys dropped: nothing a signal could see changes.
    """
    if len(b) < _FIXED_V1:
        raise ModelError(f"agent state blob too short ({len(b)} bytes)")
    (_, _, n_act, n_fp, deny_n, n_fan, bloom_items, clock, last_fp, streak,
     deny_mask) = _HEAD_V2.unpack_from(b, 0)
    n_recent = n_fan10 = 0
    if version >= 2:
        n_recent = b[_HEAD_V2.size] if len(b) > _HEAD_V2.size else 0
        at = _HEAD_V2.size + 1 + 8 * n_recent
        n_fan10 = b[at] if len(b) > at else 0
        if n_recent > RECENT_IDS or n_fan10 > FANOUT_10M_CAP:
            raise ModelError("agent state blob holds impossible values")
    fixed = _FIXED_V1 + 2 + 8 * n_recent + 8 * n_fan10 if version >= 2 else _FIXED_V1
    expected = fixed + n_act * _ACT_V2 + n_fp * _FP_V2 + n_fan * 8
    if len(b) != expected:
        raise ModelError(f"agent state blob is {len(b)} bytes, header implies {expected}")
    (crc,) = _CRC.unpack_from(b, expected - _CRC.size)
    if zlib.crc32(memoryview(b)[:expected - _CRC.size]) != crc:
        raise ModelError("agent state blob failed its CRC check (corrupt)")
    if not math.isfinite(clock) or clock < 0 or deny_n > 32:
        raise ModelError("agent state blob holds impossible values")
    st = cls()
    st.clock, st.last_fp, st.streak = clock, last_fp, streak
    st.deny_mask, st.deny_n, st.bloom_items = deny_mask, deny_n, bloom_items
    clock_ms = st.base = int(clock * 1000.0)
    off = _HEAD_V2.size
    fan10_keys: bytes = b""
    fan10_buckets: list[int] = []
    if version >= 2:
        st.recent = bytearray(b[off + 1:off + 1 + 8 * n_recent])
        off += 2 + 8 * n_recent
        fan10_keys = b[off:off + 4 * n_fan10]
        fan10_buckets = le_array("I", b[off + 4 * n_fan10:off + 8 * n_fan10]).tolist()
        off += 8 * n_fan10
    st.rates = with_totals(le_array("H", b[off:off + 2 * RATES.size]).tolist(), RATE_PLAN)
    off += 2 * RATES.size
    params = _PARAMS.unpack_from(b, off)
    if not params_ok(params):
        raise ModelError("agent state blob holds impossible values")
    st.baseline = list(params)
    off += _PARAMS.size
    st.bloom = int.from_bytes(b[off:off + _BLOOM_BYTES], "little")
    off += _BLOOM_BYTES
    for name, n, slots, long, dead in (("act", n_act, RATES.size, dead_limit(RATE_PLAN), ACT_DEAD),
                                       ("fp", n_fp, REPEAT.size, dead_limit(REPEAT_PLAN), FP_DEAD)):
        keys = bytearray(b[off:off + 8 * n])
        lasts = le_array("q", b[off + 8 * n:off + 16 * n]).tolist()
        flat = le_array("H", b[off + 16 * n:off + (16 + 2 * slots) * n]).tolist()
        off += (16 + 2 * slots) * n
        if lasts and max(lasts) > clock_ms:
            raise ModelError("agent state blob holds impossible values")
        width, nslots = long
        limit = clock_ms % width + (nslots - 1) * width + 1
        ages = [clock_ms - last for last in lasts]
        older = sorted({a for a in ages if a >= limit}, reverse=True)
        rank = {a: 2 * dead - 1 - k for k, a in enumerate(older)}
        setattr(st, f"{name}_keys", keys)
        setattr(st, f"{name}_words", [rank.get(a, a) for a in ages])
        plan = RATE_PLAN if name == "act" else REPEAT_PLAN
        setattr(st, f"{name}_rings", [with_totals(flat[i * slots:(i + 1) * slots], plan)
                                      if ages[i] < limit else None for i in range(n)])
    fan_keys = b[off:off + 4 * n_fan]
    fan_buckets = le_array("I", b[off + 4 * n_fan:off + 8 * n_fan]).tolist()
    for name, keys_raw, buckets, width, nb in (
            ("fan", fan_keys, fan_buckets, _FAN_W, _FAN_B),
            ("fan10", fan10_keys, fan10_buckets, _F10_W, _F10_B)):
        now_b = clock_ms // width
        if any(x > now_b for x in buckets) or any(x > y for x, y in zip(buckets, buckets[1:])):
            raise ModelError("agent state blob holds impossible values")
        cut = bisect_left(buckets, now_b - nb)      # expired: cut at the next touch anyway
        origin = now_b - nb
        setattr(st, f"{name}_keys", bytearray(keys_raw[4 * cut:]))
        setattr(st, f"{name}_rel", bytearray(x - origin for x in buckets[cut:]))
        setattr(st, f"{name}_origin", origin)
    return st
