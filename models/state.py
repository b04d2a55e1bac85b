"""Per-agent behavioural state and its compact, versioned binary codec.

Why flat buffers: this object is the value a changelog-backed Faust table stores
per agent, rewritten every time the agent acts.  Every part is a fixed-size or
capped buffer (``array``/``bytearray``/one big ``int``), so the state is bounded
whatever the history length, costs few Python objects in memory, and encodes or
decodes with a dozen buffer copies and one CRC (a few microseconds).  Never
pickle: a blob is parsed field by field and anything inconsistent (magic,
version, lengths, counts, CRC, non-finite clock) raises `ModelError`, which the
stream turns into a fresh state or a deny, never into executed bytes.

Layout v2 (little endian; v1 is v2 without the recent-ids block and still reads)::

    header  <4sBBBBHHd8sII>  magic "HGAS", version, n_actions, n_fingerprints,
                             deny_n, n_fanout, bloom_items, clock, last_fp,
                             streak, deny_mask
    n_recent     uint8 (v2)                 request ids in the recent ring
    recent       8 B x n_recent (v2)        blake2b-64 of the last decided request ids
    n_fan10      uint8 (v2)                 entries of the 10-minute fan-out window
    fan10        key 4 B | bucket uint32 (v2, each, ordered by last touch)
    rates        uint16 x RATES.size        agent rings: 1 s, 60 s, 1 h
    baseline     float64 x PARAMS_LEN       online anomaly baseline
    bloom        NOVELTY_BLOOM.nbytes       actions + resource types ever seen
    actions      key 8 B | last_ms int64 | rings uint16 x RATES.size   (each)
    fingerprints key 8 B | last_ms int64 | rings uint16 x REPEAT.size  (each)
    fanout       key 4 B | bucket uint32   (ordered by last touch)     (each)
    crc32        uint32 over everything before it
"""
from __future__ import annotations

import math
import struct
import sys
import zlib
from array import array
from hashlib import blake2b

from holdgate.errors import ModelError
from holdgate.models.recent import DistinctWindow, KeyedWindows
from holdgate.models.scorer import PARAMS_LEN, new_params
from holdgate.models.sketch import NOVELTY_BLOOM
from holdgate.models.windows import Horizon, WindowSet

__all__ = [
    "AgentState", "RATES", "REPEAT", "ACTIONS", "FINGERPRINTS", "FANOUT",
    "FANOUT_10M", "FANOUT_10M_CAP",
    "CODEC_VERSION", "HARD_MAX_KEYED", "HARD_MAX_FANOUT", "RECENT_IDS", "serialized_bound",
    "request_key",
]

#: rate_1s (10 x 100 ms), rate_60s (12 x 5 s), rate_1h (12 x 5 min)
RATES = WindowSet(Horizon(100, 10), Horizon(5_000, 12), Horizon(300_000, 12))
#: repeat_10s (10 x 1 s)
REPEAT = WindowSet(Horizon(1_000, 10))
ACTIONS = KeyedWindows(RATES, key_size=8)
FINGERPRINTS = KeyedWindows(REPEAT, key_size=8)
FANOUT = DistinctWindow(Horizon(5_000, 12), key_size=4)
#: distinct resources in ~10 minutes (12 x 50 s), saturating at FANOUT_10M_CAP: slow sweeps
FANOUT_10M = DistinctWindow(Horizon(50_000, 12), key_size=4)
FANOUT_10M_CAP = 64

CODEC_VERSION = 2
#: Request ids remembered per agent, so a record published twice (a producer retry
#: without idempotence, a runtime that re-sends) is never decided twice.
RECENT_IDS = 16
_MAGIC = b"HGAS"
_HEAD = struct.Struct("<4sBBBBHHd8sII")
_CRC = struct.Struct("<I")
HARD_MAX_KEYED = 255     # codec limit for actions / fingerprints (u8 count)
HARD_MAX_FANOUT = 65535  # codec limit for fan-out entries (u16 count)
_ACT_ENTRY = 8 + 8 + 2 * RATES.size
_FP_ENTRY = 8 + 8 + 2 * REPEAT.size
_FAN_ENTRY = 4 + 4
_FIXED_V1 = _HEAD.size + 2 * RATES.size + 8 * PARAMS_LEN + NOVELTY_BLOOM.nbytes + _CRC.size
_FIXED = _FIXED_V1 + 2
_SWAP = sys.byteorder != "little"


def serialized_bound(max_actions: int, max_fingerprints: int, max_fanout: int) -> int:
    """Largest possible `AgentState.to_bytes` length under the given caps."""
    return (_FIXED + 8 * RECENT_IDS + max_actions * _ACT_ENTRY
            + max_fingerprints * _FP_ENTRY + (max_fanout + FANOUT_10M_CAP) * _FAN_ENTRY)


def request_key(request_id: str) -> bytes:
    """The 8-byte key under which a request id is remembered (stable across hosts)."""
    return blake2b(request_id.encode(), digest_size=8, person=b"hg.reqid").digest()


def _le(a: array) -> bytes:
    if _SWAP:  # pragma: no cover - big-endian hosts only
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _arr(typecode: str, raw: bytes | memoryview) -> array:
    a = array(typecode)
    a.frombytes(raw)
    if _SWAP:  # pragma: no cover
        a.byteswap()
    return a


class AgentState:
    """Everything holdgate remembers about one agent, bounded in size.

    Fields are public for the signal computer; treat them as private elsewhere.
    ``clock`` is the agent's event-time clock (max ``occurred_at`` seen), exposed
    as ``last_seen`` so the stream can evict idle agents.
    """

    __slots__ = ("clock", "rates", "baseline", "bloom", "bloom_items",
                 "act_keys", "act_last", "act_rings", "fp_keys", "fp_last", "fp_rings",
                 "fan_keys", "fan_buckets", "last_fp", "streak", "deny_mask", "deny_n",
                 "recent", "fan10_keys", "fan10_buckets")

    def __init__(self) -> None:
        self.clock = 0.0
        self.rates = RATES.new()
        self.baseline = new_params()
        self.bloom = 0
        self.bloom_items = 0
        self.act_keys = bytearray()
        self.act_last = array("q")
        self.act_rings = array("H")
        self.fp_keys = bytearray()
        self.fp_last = array("q")
        self.fp_rings = array("H")
        self.fan_keys = bytearray()
        self.fan_buckets = array("I")
        self.last_fp = bytes(8)
        self.streak = 0
        self.deny_mask = 0
        self.deny_n = 0
        self.recent = bytearray()
        self.fan10_keys = bytearray()
        self.fan10_buckets = array("I")

    def has_request(self, key: bytes) -> bool:
        """True when a request with this `request_key` was decided recently."""
        recent = self.recent
        i = recent.find(key)
        while i != -1 and i % 8:
            i = recent.find(key, i + 1)
        return i != -1

    def remember_request(self, key: bytes) -> None:
        """Add a decided request's key to the ring (oldest forgotten first)."""
        self.recent += key
        if len(self.recent) > 8 * RECENT_IDS:
            del self.recent[:8]

    @property
    def last_seen(self) -> float:
        """Latest event time observed for the agent (0.0 if never)."""
        return self.clock

    @property
    def n_actions(self) -> int:
        return len(self.act_last)

    @property
    def n_fingerprints(self) -> int:
        return len(self.fp_last)

    @property
    def n_fanout(self) -> int:
        return len(self.fan_buckets)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentState):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (f"AgentState(last_seen={self.clock!r}, actions={self.n_actions}, "
                f"fingerprints={self.n_fingerprints}, fanout={self.n_fanout}, "
                f"observations={int(self.baseline[0])})")

    def memory_bytes(self) -> int:
        """Approximate resident size (object plus every buffer it owns)."""
        return sys.getsizeof(self) + sum(sys.getsizeof(getattr(self, s)) for s in self.__slots__)

    # -- codec ---------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact binary form (layout v1, see module docstring)."""
        n_act, n_fp, n_fan = len(self.act_last), len(self.fp_last), len(self.fan_buckets)
        if n_act > HARD_MAX_KEYED or n_fp > HARD_MAX_KEYED or n_fan > HARD_MAX_FANOUT:
            raise ModelError("agent state exceeds the codec's hard limits")
        body = b"".join((
            _HEAD.pack(_MAGIC, CODEC_VERSION, n_act, n_fp, self.deny_n, n_fan,
                       min(self.bloom_items, 0xFFFF), self.clock, self.last_fp,
                       self.streak, self.deny_mask),
            bytes((len(self.recent) // 8,)), self.recent,
            bytes((len(self.fan10_buckets),)), self.fan10_keys, _le(self.fan10_buckets),
            _le(self.rates), _le(self.baseline),
            self.bloom.to_bytes(NOVELTY_BLOOM.nbytes, "little"),
            self.act_keys, _le(self.act_last), _le(self.act_rings),
            self.fp_keys, _le(self.fp_last), _le(self.fp_rings),
            self.fan_keys, _le(self.fan_buckets),
        ))
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, blob: bytes | bytearray | memoryview) -> AgentState:
        """Parse `to_bytes` output; anything inconsistent raises `ModelError`."""
        b = memoryview(blob).cast("B") if not isinstance(blob, bytes) else blob
        if len(b) < _FIXED_V1:
            raise ModelError(f"agent state blob too short ({len(b)} bytes)")
        try:
            (magic, version, n_act, n_fp, deny_n, n_fan, bloom_items, clock, last_fp,
             streak, deny_mask) = _HEAD.unpack_from(b, 0)
        except struct.error as exc:  # pragma: no cover - length checked above
            raise ModelError(f"agent state header unreadable: {exc}") from None
        if magic != _MAGIC:
            raise ModelError("not an agent state blob (bad magic)")
        if version not in (1, CODEC_VERSION):
            raise ModelError(f"agent state codec v{version} not supported (v{CODEC_VERSION})")
        n_recent = n_fan10 = 0
        if version >= 2:
            n_recent = b[_HEAD.size] if len(b) > _HEAD.size else 0
            at = _HEAD.size + 1 + 8 * n_recent
            n_fan10 = b[at] if len(b) > at else 0
            if n_recent > RECENT_IDS or n_fan10 > FANOUT_10M_CAP:
                raise ModelError("agent state blob holds impossible values")
        fixed = _FIXED + 8 * n_recent + _FAN_ENTRY * n_fan10 if version >= 2 else _FIXED_V1
        expected = fixed + n_act * _ACT_ENTRY + n_fp * _FP_ENTRY + n_fan * _FAN_ENTRY
        if len(b) != expected:
            raise ModelError(f"agent state blob is {len(b)} bytes, header implies {expected}")
        (crc,) = _CRC.unpack_from(b, expected - _CRC.size)
        if zlib.crc32(memoryview(b)[:expected - _CRC.size]) != crc:
            raise ModelError("agent state blob failed its CRC check (corrupt)")
        if not math.isfinite(clock) or clock < 0 or deny_n > 32:
            raise ModelError("agent state blob holds impossible values")
        st = cls.__new__(cls)
        st.clock, st.last_fp, st.streak = clock, last_fp, streak
        st.deny_mask, st.deny_n, st.bloom_items = deny_mask, deny_n, bloom_items
        mv = memoryview(b)
        off = _HEAD.size

        def take(size: int) -> memoryview:
            nonlocal off
            part = mv[off:off + size]
            off += size
            return part

        st.recent = bytearray()
        st.fan10_keys, st.fan10_buckets = bytearray(), array("I")
        if version >= 2:
            st.recent = bytearray(mv[off + 1:off + 1 + 8 * n_recent])
            off += 1 + 8 * n_recent + 1
            st.fan10_keys = bytearray(take(4 * n_fan10))
            st.fan10_buckets = _arr("I", take(4 * n_fan10))

        st.rates = _arr("H", take(2 * RATES.size))
        st.baseline = _arr("d", take(8 * PARAMS_LEN))
        st.bloom = int.from_bytes(take(NOVELTY_BLOOM.nbytes), "little")
        st.act_keys = bytearray(take(8 * n_act))
        st.act_last = _arr("q", take(8 * n_act))
        st.act_rings = _arr("H", take(2 * RATES.size * n_act))
        st.fp_keys = bytearray(take(8 * n_fp))
        st.fp_last = _arr("q", take(8 * n_fp))
        st.fp_rings = _arr("H", take(2 * REPEAT.size * n_fp))
        st.fan_keys = bytearray(take(4 * n_fan))
        st.fan_buckets = _arr("I", take(4 * n_fan))
        return st
