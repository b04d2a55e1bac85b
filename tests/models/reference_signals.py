"""Frozen reference: the signal computer and agent-state codec as they were before the
hot-path work, kept verbatim (test-only) so that the optimized implementation can be
proven identical to it: every signal for any event sequence, and every state it writes.

Copied from models/{windows,recent,sketch,scorer,features,state,signals}.py at commit
2b1c1e08163ad562129ccd49bba2f02fc9957242 (codec v2); only imports, ``__all__`` and the
module docstrings were removed.  Do not "fix" or speed up anything here: this file *is*
the specification the differential tests hold the live code to.  Fitted-model pieces
that the live code still imports unchanged (profiles, the forest) are imported from the
package, so both sides read the same model.
"""
from __future__ import annotations

import math
import struct
import sys
import zlib
from abc import ABC, abstractmethod
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from hashlib import blake2b
from math import log1p
from typing import Any, Mapping, MutableMapping, Sequence

import numpy as np
import orjson

from holdgate.errors import ConfigError, ModelError
from holdgate.events import ActionRequest
from holdgate.models.profile import DEFAULT_ACTION_LIMIT, DEFAULT_LIMITS, block_of, pct
from holdgate.signals import SIGNAL_NAMES

# ----------------------------------------------------------------------
# models/windows.py
# ----------------------------------------------------------------------
COUNTER_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class Horizon:
    """A window of ``buckets`` buckets of ``width_ms`` (the ring has one slot more)."""

    width_ms: int
    buckets: int

    def __post_init__(self) -> None:
        if self.width_ms <= 0 or self.buckets <= 0:
            raise ValueError("width_ms and buckets must be positive")

    @property
    def slots(self) -> int:
        """Ring length: the current bucket plus ``buckets`` past ones."""
        return self.buckets + 1

    @property
    def seconds(self) -> float:
        """Nominal horizon (the window covers at least this much event time)."""
        return self.width_ms * self.buckets / 1000.0

    def bucket(self, t_ms: int) -> int:
        """Absolute bucket index of an event-time instant (integer ms)."""
        return t_ms // self.width_ms


class WindowSet:
    """A fixed group of horizons stored contiguously in a uint16 array segment.

    The segment does not store its own time: the owner keeps ``last_ms`` (the
    event time the rings were last advanced to) and passes it in, because one
    timestamp serves every horizon of the segment.

    >>> ws = WindowSet(Horizon(1000, 10))
    >>> rings = ws.new()
    >>> ws.observe(rings, 0, 0, 5_000)
    [1]
    >>> ws.observe(rings, 0, 5_000, 9_999)
    [2]
    >>> ws.observe(rings, 0, 9_999, 16_000, add=0)   # 5 s bucket has left the window
    [1]
    """

    __slots__ = ("horizons", "size", "_plan", "_zeros")

    def __init__(self, *horizons: Horizon) -> None:
        if not horizons:
            raise ValueError("at least one horizon")
        self.horizons = horizons
        plan = []
        off = 0
        for h in horizons:
            plan.append((off, h.width_ms, h.slots))
            off += h.slots
        self.size = off
        self._plan = tuple(plan)
        self._zeros = {h.slots: array("H", bytes(2 * h.slots)) for h in horizons}

    def new(self) -> array:
        """A zeroed segment for one owner."""
        return array("H", bytes(2 * self.size))

    def observe(self, rings: array, base: int, last_ms: int, now_ms: int,
                add: int | tuple[int, ...] = 1) -> list[int]:
        """Advance every ring from ``last_ms`` to ``now_ms``, add ``add`` events at
        ``now_ms`` and return the window counts (one per horizon, incl. the added).

        ``add`` may give one count per horizon (a tuple), so that some horizons
        record an event only later (the 1 h windows count allowed actions only).
        ``now_ms < last_ms`` is a caller bug (clocks are clamped upstream); it is
        treated as ``now_ms == last_ms`` rather than corrupting the ring.
        """
        if now_ms < last_ms:
            now_ms = last_ms
        adds = add if isinstance(add, tuple) else (add,) * len(self._plan)
        out = []
        for (off, width, n), add in zip(self._plan, adds):
            off += base
            new = now_ms // width
            step = new - last_ms // width
            if step:
                if step >= n:
                    rings[off:off + n] = self._zeros[n]
                else:
                    for b in range(new - step + 1, new + 1):
                        rings[off + b % n] = 0
            if add:
                i = off + new % n
                v = rings[i] + add
                rings[i] = v if v < COUNTER_MAX else COUNTER_MAX
            out.append(sum(rings[off:off + n]))
        return out

    def counts(self, rings: array, base: int, last_ms: int, now_ms: int) -> list[int]:
        """Window counts as of ``now_ms`` without recording an event (read-only copy)."""
        scratch = rings[base:base + self.size]
        return self.observe(scratch, 0, last_ms, now_ms, add=0)


# ----------------------------------------------------------------------
# models/recent.py
# ----------------------------------------------------------------------
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


# ----------------------------------------------------------------------
# models/sketch.py
# ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BloomGeometry:
    """Size (a power of two, in bits) and probe count of a Bloom filter.

    >>> g = BloomGeometry(bits=2048, probes=4)
    >>> m = g.mask(bytes.fromhex("0123456789abcdef"))
    >>> bloom = 0
    >>> g.contains(bloom, m), g.contains(bloom | m, m)
    (False, True)
    """

    bits: int = 2048
    probes: int = 4

    def __post_init__(self) -> None:
        if self.bits < 64 or self.bits & (self.bits - 1):
            raise ValueError("bits must be a power of two >= 64")
        if not 1 <= self.probes or self.probes * self._index_bits > 64:
            raise ValueError("probes must fit in a 64-bit digest")

    @property
    def _index_bits(self) -> int:
        return self.bits.bit_length() - 1

    @property
    def nbytes(self) -> int:
        """Serialized size of the bitset."""
        return self.bits // 8

    def mask(self, digest: bytes) -> int:
        """The probe bits of a key, from its (>= 8-byte) stable digest."""
        h = int.from_bytes(digest[:8], "little")
        width = self._index_bits
        low = self.bits - 1
        m = 0
        for i in range(self.probes):
            m |= 1 << ((h >> (i * width)) & low)
        return m

    @staticmethod
    def contains(bloom: int, mask: int) -> bool:
        """True when every probe bit is set (the key was, probably, added)."""
        return bloom & mask == mask

    def false_positive_rate(self, items: int) -> float:
        """Expected chance that a new key looks seen after ``items`` insertions."""
        return (1.0 - math.exp(-self.probes * items / self.bits)) ** self.probes


NOVELTY_BLOOM = BloomGeometry(bits=2048, probes=4)


# ----------------------------------------------------------------------
# models/scorer.py
# ----------------------------------------------------------------------
FEATURE_NAMES: tuple[str, ...] = ("rate_1s", "rate_60s", "fanout_60s", "repeat_10s")
_F = len(FEATURE_NAMES)
PARAMS_LEN = 1 + 2 * _F  # [n, mean_0..mean_F-1, spread_0..spread_F-1]
_N_MAX = float(2**53)


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    """Knobs of the online baseline; the defaults were tuned on simulated agents
    (steady, jittery human-paced, Poisson) to keep steady behaviour under ~100
    while a 50x burst scores above 900."""

    warmup_n: int = 50          # observations before any non-zero score
    memory: int = 1000          # EWMA horizon, in observations
    spread_floor: float = 0.1   # minimum MAD in log1p space (~10% relative change)
    spread_k: float = 1.25      # MAD -> sigma
    z_free: float = 3.0         # z below this scores 0 and learns at full rate
    z_scale: float = 3.0        # u at which the score reaches 500
    clip: float = 3.0           # winsorize observations at mean +- clip * sigma
    gate_factor: float = 0.05   # learning-rate multiplier for anomalous observations

    def __post_init__(self) -> None:
        if self.warmup_n < 1 or self.memory < 1:
            raise ConfigError("baseline warmup_n and memory must be >= 1")
        if min(self.spread_floor, self.spread_k, self.z_scale, self.clip) <= 0:
            raise ConfigError("baseline spread_floor, spread_k, z_scale, clip must be > 0")
        if self.z_free < 0 or not 0 <= self.gate_factor <= 1:
            raise ConfigError("baseline z_free must be >= 0 and gate_factor in [0, 1]")


_DEFAULT = BaselineConfig()


def new_params() -> array:
    """Parameters of an agent that has not been observed yet."""
    return array("d", bytes(8 * PARAMS_LEN))


def score_and_learn(p: array, counts: Sequence[float], cfg: BaselineConfig = _DEFAULT,
                    learn: bool = True) -> float:
    """Score ``counts`` (raw feature values, FEATURE_NAMES order) against the
    baseline ``p``, then (if ``learn``) update ``p`` in place.  Returns 0..1000."""
    n = p[0]
    v = [log1p(c) if c > 0 else 0.0 for c in counts]
    if n == 0.0:
        if learn:
            for f in range(_F):
                p[1 + f] = v[f]
            p[0] = 1.0
        return 0.0
    floor, k = cfg.spread_floor, cfg.spread_k
    zmax = 0.0
    scales = [0.0] * _F
    for f in range(_F):
        s = p[1 + _F + f]
        sc = k * (s if s > floor else floor)
        scales[f] = sc
        z = (v[f] - p[1 + f]) / sc
        if z > zmax:
            zmax = z
    warm = n >= cfg.warmup_n
    score = 0.0
    if warm:
        u = zmax - cfg.z_free
        if u > 0.0:
            uu = u * u
            score = 1000.0 * uu / (uu + cfg.z_scale * cfg.z_scale)
    if learn:
        alpha = 1.0 / (n + 1.0) if n < cfg.memory else 1.0 / cfg.memory
        if warm and zmax > cfg.z_free:
            alpha *= cfg.gate_factor
        c = cfg.clip
        for f in range(_F):
            m = p[1 + f]
            x = v[f]
            if warm:
                lim = c * scales[f]
                if x > m + lim:
                    x = m + lim
                elif x < m - lim:
                    x = m - lim
            s = p[1 + _F + f]
            p[1 + f] = m + alpha * (x - m)
            p[1 + _F + f] = s + alpha * (abs(x - m) - s)
        p[0] = n + 1.0 if n < _N_MAX else n
    return score


def score_rows(X: np.ndarray, P: np.ndarray, cfg: BaselineConfig = _DEFAULT) -> np.ndarray:
    """Vectorized scoring (no learning): row i of ``X`` (raw feature counts)
    against row i of ``P`` (parameters; one row broadcasts).  Same arithmetic as
    `score_and_learn`, so results agree up to the last ulp of ``log1p``."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    if X.shape[1] != _F or P.shape[1] != PARAMS_LEN:
        raise ValueError(f"expected X[:, {_F}] and P[:, {PARAMS_LEN}]")
    V = np.log1p(np.maximum(X, 0.0))
    scale = cfg.spread_k * np.maximum(P[:, 1 + _F:], cfg.spread_floor)
    z = np.maximum(((V - P[:, 1:1 + _F]) / scale).max(axis=1), 0.0)
    u = np.maximum(z - cfg.z_free, 0.0)
    uu = u * u
    out = 1000.0 * uu / (uu + cfg.z_scale * cfg.z_scale)
    out[np.broadcast_to(P[:, 0] < cfg.warmup_n, out.shape)] = 0.0
    return out


class Scorer(ABC):
    """River-style anomaly scorer over ``FEATURE_NAMES``; high = anomalous, 0..1000.

    Subclasses implement `learn_one` and `score_one`; override `score_many` with
    a vectorized version (the stream always scores a whole micro-batch at once).
    Every implementation must pass the generic checks in
    ``tests/models/test_models_scorer.py``.

    >>> from holdgate.models.scorer import OnlineBaseline
    >>> steady = {"rate_1s": 1, "rate_60s": 12, "fanout_60s": 3, "repeat_10s": 2}
    >>> model = OnlineBaseline()
    >>> for _ in range(200):
    ...     model.learn_one(steady)
    >>> model.score_one(steady)
    0.0
    >>> burst = dict(steady, rate_1s=50, rate_60s=600)
    >>> model.score_one(burst) > 900
    True
    >>> [round(s) for s in model.score_many(np.array([[1, 12, 3, 2], [50, 600, 3, 2]]))]
    [0, 988]
    """

    FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES
    model_version: str = "unversioned"

    @abstractmethod
    def learn_one(self, x: Mapping[str, float]) -> None:
        """Update the model with one observation."""

    @abstractmethod
    def score_one(self, x: Mapping[str, float]) -> float:
        """Anomaly of one observation, 0..1000 (does not learn)."""

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Anomaly of each row of ``X`` (columns = FEATURE_NAMES), 0..1000."""
        names = self.FEATURE_NAMES
        return np.array([self.score_one(dict(zip(names, row))) for row in np.asarray(X)],
                        dtype=np.float64)

    def _vector(self, x: Mapping[str, float]) -> list[float]:
        return [x.get(name, 0) for name in self.FEATURE_NAMES]


class OnlineBaseline(Scorer):
    """One agent's online baseline; ``params`` may be the array inside an
    `AgentState` (shared, not copied), so learning updates the agent's state."""

    model_version = "online-baseline/1"

    def __init__(self, *, config: BaselineConfig | None = None,
                 params: array | None = None) -> None:
        self.config = config or _DEFAULT
        if params is None:
            params = new_params()
        if len(params) != PARAMS_LEN or params.typecode != "d":
            raise ValueError(f"params must be array('d') of length {PARAMS_LEN}")
        self.params = params

    @property
    def n_seen(self) -> int:
        return int(self.params[0])

    @property
    def warm(self) -> bool:
        return self.params[0] >= self.config.warmup_n

    def learn_one(self, x: Mapping[str, float]) -> None:
        score_and_learn(self.params, self._vector(x), self.config, learn=True)

    def score_one(self, x: Mapping[str, float]) -> float:
        return score_and_learn(self.params, self._vector(x), self.config, learn=False)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        return score_rows(X, np.frombuffer(self.params, dtype=np.float64), self.config)


# ----------------------------------------------------------------------
# models/features.py
# ----------------------------------------------------------------------
FOREST_FEATURES: tuple[str, ...] = (
    "rate_1s_pct", "rate_60s_pct", "rate_1h_pct", "action_rate_1s_pct", "fanout_pct",
    "fanout_10m_pct", "repeat_10s", "streak", "unusual_action", "unusual_resource_type",
    "off_hours",
)
_LOG = ("rate_1s_pct", "rate_60s_pct", "rate_1h_pct", "action_rate_1s_pct", "fanout_pct",
        "fanout_10m_pct", "repeat_10s", "streak")
_COLS = np.array([SIGNAL_NAMES.index(n) for n in FOREST_FEATURES])
_LOG_MASK = np.array([n in _LOG for n in FOREST_FEATURES])


def feature_matrix(rows: np.ndarray) -> np.ndarray:
    """Rows of signals (columns in SIGNAL_NAMES order) -> forest features (FOREST_FEATURES)."""
    X = np.asarray(rows, dtype=np.float64)[:, _COLS]
    X[:, _LOG_MASK] = np.log1p(np.maximum(X[:, _LOG_MASK], 0.0))
    return X


# ----------------------------------------------------------------------
# models/state.py
# ----------------------------------------------------------------------
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


# ----------------------------------------------------------------------
# models/signals.py
# ----------------------------------------------------------------------
_I_ANOMALY = SIGNAL_NAMES.index("anomaly")
_COUNT_ALL = (1, 1, 0)        # 1 s and 60 s windows: every attempt; 1 h: allowed only
_COUNT_ALLOWED = (0, 0, 1)
_STREAK_MAX = 0xFFFFFFFF
_CACHE_MAX = 4096
_OPT = orjson.OPT_SORT_KEYS


def fingerprint(request: ActionRequest) -> bytes:
    """Stable 8-byte digest of (action, resource type, resource id, context).

    The context is canonicalized with sorted keys, so key order never matters;
    blake2b (not ``hash()``) makes it identical across processes and hosts.
    """
    res = request.resource
    canon = orjson.dumps((request.action, res.type, res.id, request.context), option=_OPT)
    return blake2b(canon, digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class SignalConfig:
    """Caps of the per-agent state and the anomaly baseline's knobs.

    Window geometry is fixed by the state codec (changing it would invalidate
    every stored state); caps may change freely, states shrink on next touch.
    """

    max_actions: int = 32
    max_fingerprints: int = 32
    max_fanout: int = 256
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.max_actions <= HARD_MAX_KEYED:
            raise ConfigError(f"max_actions must be 1..{HARD_MAX_KEYED}")
        if not 1 <= self.max_fingerprints <= HARD_MAX_KEYED:
            raise ConfigError(f"max_fingerprints must be 1..{HARD_MAX_KEYED}")
        if not 1 <= self.max_fanout <= HARD_MAX_FANOUT:
            raise ConfigError(f"max_fanout must be 1..{HARD_MAX_FANOUT}")

    @property
    def max_state_bytes(self) -> int:
        """Upper bound of a serialized `AgentState` under these caps."""
        return serialized_bound(self.max_actions, self.max_fingerprints, self.max_fanout)


class SignalComputer:
    """Turns each action into its integer signals, updating the agent's state.

    Stateless apart from digest caches (pure functions of their keys), so any
    number of computers over the same event sequence give identical signals.
    ``model`` is an optional fitted `BaselineModel`: its profiles turn counters
    into signals relative to each agent's normal, and its forest scores the
    whole micro-batch at once (vectorized).  ``roles`` maps agent ids to their
    role (from the policy bundle's entity store), the prior for thin history.
    """

    def __init__(self, *, config: SignalConfig | None = None, model: Any = None,
                 roles: Mapping[str, str] | None = None) -> None:
        self.config = config or SignalConfig()
        self.model = model
        self.roles = dict(roles or {})
        self._actions: dict[str, tuple[bytes, int]] = {}
        self._types: dict[str, int] = {}

    @property
    def model_version(self) -> str:
        """Names the scoring in effect, for the verdict's ``model_version``."""
        if self.model is None:
            return "online-baseline/1"
        return str(self.model.version)

    # -- digests (cached: pure functions of their input) ----------------------

    def _action_key(self, action: str) -> tuple[bytes, int]:
        hit = self._actions.get(action)
        if hit is None:
            if len(self._actions) >= _CACHE_MAX:
                self._actions.clear()
            key = blake2b(action.encode(), digest_size=8, person=b"hg.action").digest()
            hit = self._actions[action] = (key, NOVELTY_BLOOM.mask(key))
        return hit

    def _type_mask(self, rtype: str) -> int:
        hit = self._types.get(rtype)
        if hit is None:
            if len(self._types) >= _CACHE_MAX:
                self._types.clear()
            key = blake2b(rtype.encode(), digest_size=8, person=b"hg.rtype").digest()
            hit = self._types[rtype] = NOVELTY_BLOOM.mask(key)
        return hit

    # -- the hot path ---------------------------------------------------------

    def _observe(self, st: AgentState, req: ActionRequest) -> list[int]:
        cfg = self.config
        t = req.occurred_at
        prev_ms = int(st.clock * 1000.0)
        if t > st.clock:
            st.clock = t
        now_ms = int(st.clock * 1000.0)

        rate_1s, rate_60s, rate_1h = RATES.observe(st.rates, 0, prev_ms, now_ms, _COUNT_ALL)
        rate_1h += 1                 # allowed ones so far, and this attempt

        akey, amask = self._action_key(req.action)
        (a1, a60, a3600), _ = ACTIONS.observe(
            st.act_keys, st.act_last, st.act_rings, akey, now_ms, cfg.max_actions, _COUNT_ALL)
        a3600 += 1

        fp = fingerprint(req)
        (repeat,), _ = FINGERPRINTS.observe(
            st.fp_keys, st.fp_last, st.fp_rings, fp, now_ms, cfg.max_fingerprints)
        if fp == st.last_fp and st.streak:
            if st.streak < _STREAK_MAX:
                st.streak += 1
        else:
            st.last_fp = fp
            st.streak = 1

        res = req.resource
        rkey = blake2b(f"{res.type}\x00{res.id}".encode(), digest_size=4,
                       person=b"hg.res").digest()
        fanout = FANOUT.touch(st.fan_keys, st.fan_buckets, rkey, now_ms, cfg.max_fanout)
        fan10 = FANOUT_10M.touch(st.fan10_keys, st.fan10_buckets, rkey, now_ms, FANOUT_10M_CAP)

        bloom = st.bloom
        new_action = 0 if bloom & amask == amask else 1
        tmask = self._type_mask(res.type)
        new_type = 0 if bloom & tmask == tmask else 1
        if new_action or new_type:
            st.bloom = bloom | amask | tmask
            st.bloom_items = min(st.bloom_items + new_action + new_type, 0xFFFF)

        dn = st.deny_n
        deny_pct = (100 * st.deny_mask.bit_count() + dn // 2) // dn if dn else 0

        anomaly = 0
        if self.model is None:
            anomaly = int(score_and_learn(st.baseline, (rate_1s, rate_60s, fanout, repeat),
                                          cfg.baseline))
        row = [rate_1s, rate_60s, rate_1h, a1, a60, a3600, repeat, st.streak, fanout,
               new_action, new_type, deny_pct, anomaly]
        row += self._relative(req, st.clock, rate_1s, rate_60s, rate_1h, a1, fanout, fan10)
        return row

    def _relative(self, req: ActionRequest, t: float, rate_1s: int, rate_60s: int,
                  rate_1h: int, a1: int, fanout: int, fan10: int) -> list[int]:
        """Counters against this agent's normal: the fitted profile, or fleet defaults."""
        model = self.model
        if model is None:
            l1, l60, l3600, lfan, lfan10 = DEFAULT_LIMITS
            return [pct(rate_1s, l1), pct(rate_60s, l60), pct(rate_1h, l3600),
                    pct(a1, DEFAULT_ACTION_LIMIT), pct(fanout, lfan), 0, 0, 0,
                    fan10, pct(fan10, lfan10)]
        profiles = model.profiles
        agent, role, block = req.agent_id, self.roles.get(req.agent_id), block_of(t)
        l1, l60, l3600, lfan, lfan10 = profiles.limits(agent, role, block)
        unusual_action, unusual_type = profiles.unusual(agent, role, req.action,
                                                        req.resource.type)
        return [pct(rate_1s, l1), pct(rate_60s, l60), pct(rate_1h, l3600),
                pct(a1, profiles.action_limit(agent, role, req.action)), pct(fanout, lfan),
                unusual_action, unusual_type, profiles.off_hours(agent, role, block),
                fan10, pct(fan10, lfan10)]

    def observe_batch(self, states: MutableMapping[str, AgentState],
                      requests: Sequence[ActionRequest]) -> list[dict[str, int]]:
        """Signals for each request, in order; identical to one call per request.

        Missing agents are created.  Each touched state is assigned back to
        ``states`` once at the end (a Faust table only writes its changelog on
        assignment, not on in-place mutation).
        """
        touched: dict[str, AgentState] = {}
        rows: list[list[int]] = []
        for req in requests:
            aid = req.agent_id
            st = touched.get(aid)
            if st is None:
                st = states.get(aid)
                if st is None:
                    st = AgentState()
                touched[aid] = st
            rows.append(self._observe(st, req))
        if self.model is not None and rows:
            scores = self.model.anomaly(feature_matrix(np.array(rows, dtype=np.float64)))
            for row, score in zip(rows, scores.tolist()):
                row[_I_ANOMALY] = score
        for aid, st in touched.items():
            states[aid] = st
        names = SIGNAL_NAMES
        return [dict(zip(names, row)) for row in rows]

    def rederive(self, signals: Sequence[Mapping[str, int]],
                 requests: Sequence[ActionRequest],
                 clocks: Sequence[float]) -> list[dict[str, int]]:
        """The counters another computer observed, read against *this* one's model.

        A shadow candidate model must see the same traffic as the enforced one
        without counting it twice: the counters (rates, repeats, fanout, novelty)
        do not depend on the model, so only what the model derives from them is
        recomputed: the ``*_pct`` limits, ``unusual_*``, ``off_hours`` and the
        anomaly score (the whole batch scored at once, as in `observe_batch`).
        `clocks` are the agents' clocks after observing (the 3-hour block).
        Without a model of its own, the given anomaly score is kept.
        """
        rows: list[list[int]] = []
        for sig, req, t in zip(signals, requests, clocks, strict=True):
            row = [int(sig.get(name, 0)) for name in SIGNAL_NAMES[:_I_ANOMALY + 1]]
            row += self._relative(req, t, sig.get("rate_1s", 0), sig.get("rate_60s", 0),
                                  sig.get("rate_1h", 0), sig.get("action_rate_1s", 0),
                                  sig.get("fanout_60s", 0), sig.get("fanout_10m", 0))
            rows.append(row)
        if self.model is not None and rows:
            scores = self.model.anomaly(feature_matrix(np.array(rows, dtype=np.float64)))
            for row, score in zip(rows, scores.tolist()):
                row[_I_ANOMALY] = score
        names = SIGNAL_NAMES
        return [dict(zip(names, row)) for row in rows]

    def observe(self, states: MutableMapping[str, AgentState],
                request: ActionRequest) -> dict[str, int]:
        """Convenience: `observe_batch` of a single request."""
        return self.observe_batch(states, (request,))[0]

    def record_outcomes(self, states: MutableMapping[str, AgentState],
                        requests: Sequence[ActionRequest], denied: Sequence[bool]) -> None:
        """Feed decisions back (after Cedar): ``deny_ratio_pct`` and the 1 h windows.

        Outcomes shift into a 32-bit history per agent in the given order, and an
        allowed action is added to the agent's and the action's 1 h windows at the
        agent's clock.  An agent with no state (evicted meanwhile) is skipped.
        """
        if len(requests) != len(denied):
            raise ValueError("requests and denied must have the same length")
        touched: dict[str, AgentState] = {}
        for req, d in zip(requests, denied):
            aid = req.agent_id
            st = touched.get(aid)
            if st is None:
                st = states.get(aid)
                if st is None:
                    continue
                touched[aid] = st
            st.deny_mask = ((st.deny_mask << 1) | (1 if d else 0)) & 0xFFFFFFFF
            if st.deny_n < 32:
                st.deny_n += 1
            if not d:
                now_ms = int(st.clock * 1000.0)
                RATES.observe(st.rates, 0, now_ms, now_ms, _COUNT_ALLOWED)
                ACTIONS.observe(st.act_keys, st.act_last, st.act_rings,
                                self._action_key(req.action)[0], now_ms,
                                self.config.max_actions, _COUNT_ALLOWED)
        for aid, st in touched.items():
            states[aid] = st
