"""Bucketed event-time ring counters: the sliding windows behind every rate signal.

Why buckets: an exact sliding window keeps one timestamp per event, so its size
grows with the agent's rate (a runaway loop is exactly when it would explode).
A ring of ``B + 1`` bucket counters per horizon is fixed-size whatever the rate.

Semantics, chosen to be *conservative* for a gate: a horizon of ``B`` buckets of
width ``w`` counts the current bucket plus the ``B`` previous ones, so it holds
every event of the last ``B * w`` and possibly some up to one bucket older
(never fewer).  A limit therefore never under-counts; it may over-count by at
most one bucket's worth (100 ms for the 1 s window, 5 s for 60 s, 5 min for 1 h).

Time is integer milliseconds of *event* time, supplied by the caller, which
guarantees it never decreases per ring (see `AgentState` for the agent clock).
Counters are uint16 and saturate at 65535 per bucket: far above any sane policy
threshold, and it keeps a ring of 13 buckets at 26 bytes.

Several horizons are laid side by side in one ``array('H')`` segment so that one
agent (or one of its actions) keeps all its rings in a single flat buffer, which
is what makes the binary codec a handful of ``tobytes`` calls.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass

__all__ = ["Horizon", "WindowSet", "COUNTER_MAX"]

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
