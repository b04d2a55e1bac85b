"""Per-agent behavioural state: what holdgate remembers about each agent, bounded.

Why this shape: the signal computer (`holdgate.models.signals`) reads and bumps
a few counters per action, so the decoded state is plain lists and packed
``bytearray`` keys that the hot path indexes directly; the worker holds it only
for the agents a batch touches and stores the rest encoded (`holdgate.models.codec`,
compact and versioned: the stored blob is what 100,000 agents cost).  Every
table is capped (`holdgate.models.layout`), so the state is bounded whatever
the history length.  Never pickled: `from_bytes` parses field by field and
raises `ModelError` on anything inconsistent.
"""
from __future__ import annotations

import sys
from hashlib import blake2b

from holdgate.models import codec
from holdgate.models.codec import CODEC_VERSION, serialized_bound
from holdgate.models.layout import (
    ACTIONS, FANOUT, FANOUT_10M, FANOUT_10M_CAP, FINGERPRINTS, HARD_MAX_FANOUT, HARD_MAX_KEYED,
    RATE_PLAN, RATES, RECENT_IDS, REPEAT,
)
from holdgate.models.rings import Ring, new_ring
from holdgate.models.scorer import PARAMS_LEN

__all__ = [
    "AgentState", "RATES", "REPEAT", "ACTIONS", "FINGERPRINTS", "FANOUT",
    "FANOUT_10M", "FANOUT_10M_CAP",
    "CODEC_VERSION", "HARD_MAX_KEYED", "HARD_MAX_FANOUT", "RECENT_IDS", "serialized_bound",
    "request_key",
]


def request_key(request_id: str) -> bytes:
    """The 8-byte key under which a request id is remembered (stable across hosts)."""
    return blake2b(request_id.encode(), digest_size=8, person=b"hg.reqid").digest()


class AgentState:
    """Everything holdgate remembers about one agent, bounded in size.

    Fields are public for the signal computer; treat them as private elsewhere.
    ``clock`` is the agent's event-time clock (max ``occurred_at`` seen), exposed
    as ``last_seen`` so the stream can evict idle agents.

    Keyed tables (``act_*`` actions, ``fp_*`` fingerprints) are parallel: packed
    keys; per entry a *word*, ``base - last_ms`` (its age from ``base``, a past
    clock in ms; larger is older) or, from ``ACT_DEAD`` / ``FP_DEAD`` up
    (`holdgate.models.layout`), a dead entry's rank (older than every live one);
    and its ring (list, chunk or None, see `holdgate.models.rings`).  Fan-out
    tables keep packed keys, ordered by last touch, and each key's bucket as a
    byte offset from ``*_origin`` (never decreasing along the table).  ``base``
    moves only when the state is encoded (`to_bytes` rebases the words on the
    clock), so the hot path never rewrites a table to let time pass.
    """

    __slots__ = ("clock", "base", "rates", "baseline", "bloom", "bloom_items",
                 "act_keys", "act_words", "act_rings", "fp_keys", "fp_words", "fp_rings",
                 "fan_keys", "fan_rel", "fan_origin", "fan10_keys", "fan10_rel",
                 "fan10_origin", "last_fp", "streak", "deny_mask", "deny_n", "recent")

    def __init__(self) -> None:
        self.clock = 0.0
        self.base = 0
        self.rates = new_ring(RATE_PLAN)
        self.baseline = [0.0] * PARAMS_LEN
        self.bloom = 0
        self.bloom_items = 0
        self.act_keys = bytearray()
        self.act_words: list[int] = []
        self.act_rings: list[Ring] = []
        self.fp_keys = bytearray()
        self.fp_words: list[int] = []
        self.fp_rings: list[Ring] = []
        self.fan_keys = bytearray()
        self.fan_rel = bytearray()
        self.fan_origin = 0
        self.fan10_keys = bytearray()
        self.fan10_rel = bytearray()
        self.fan10_origin = 0
        self.last_fp = bytes(8)
        self.streak = 0
        self.deny_mask = 0
        self.deny_n = 0
        self.recent = bytearray()

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
        return len(self.act_words)

    @property
    def n_fingerprints(self) -> int:
        return len(self.fp_words)

    @property
    def n_fanout(self) -> int:
        return len(self.fan_rel)

    def __eq__(self, other: object) -> bool:
        """Equal when they encode alike: the same signals from here on, however each
        is held in memory (decoded or not)."""
        if not isinstance(other, AgentState):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (f"AgentState(last_seen={self.clock!r}, actions={self.n_actions}, "
                f"fingerprints={self.n_fingerprints}, fanout={self.n_fanout}, "
                f"observations={int(self.baseline[0])})")

    def memory_bytes(self) -> int:
        """Approximate resident size (object plus every buffer it owns)."""
        size = sys.getsizeof(self)
        for s in self.__slots__:
            v = getattr(self, s)
            size += sys.getsizeof(v)
            if s in ("act_rings", "fp_rings"):
                size += sum(sys.getsizeof(r) for r in v if r is not None)
        return size

    # -- codec (holdgate.models.codec) ---------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact binary form (layout v3).  Rebases the keyed tables on the clock on
        the way (ages from now, entries that have died since ranked): the same
        state, written as it will be read."""
        return codec.encode(self)

    @classmethod
    def from_bytes(cls, blob: bytes | bytearray | memoryview) -> AgentState:
        """Parse `to_bytes` output (v3, or v1/v2 of earlier releases); anything
        inconsistent raises `ModelError`."""
        return codec.decode(cls, blob)
