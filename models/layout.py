"""The fixed geometry of per-agent state: its windows, table limits and rank space.

Why a module of its own: the in-memory state (`holdgate.models.state`), its codec
(`holdgate.models.codec`) and the unrolled counters of the signal computer
(`holdgate.models.counters`) are all written for exactly this geometry, and a
stored state means something only under it.  Changing anything here changes
what stored blobs mean, so it goes with a new codec version, never alone.
"""
from __future__ import annotations

from holdgate.models.recent import DistinctWindow, KeyedWindows
from holdgate.models.windows import Horizon, WindowSet

__all__ = [
    "RATES", "REPEAT", "ACTIONS", "FINGERPRINTS", "FANOUT", "FANOUT_10M", "FANOUT_10M_CAP",
    "RECENT_IDS", "HARD_MAX_KEYED", "HARD_MAX_FANOUT", "ACT_DEAD", "FP_DEAD",
    "RATE_PLAN", "REPEAT_PLAN", "Plan", "dead_limit",
]

#: A ring's horizons: (offset in the ring, bucket width in ms, slots) each.
Plan = tuple[tuple[int, int, int], ...]

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

#: Request ids remembered per agent, so a record published twice (a producer retry
#: without idempotence, a runtime that re-sends) is never decided twice.
RECENT_IDS = 16
HARD_MAX_KEYED = 255     # codec limit for actions / fingerprints (u8 count)
HARD_MAX_FANOUT = 65535  # codec limit for fan-out entries (u16 count)
#: Word values from which an action / fingerprint entry is dead (rank-coded, see
#: `holdgate.models.state.AgentState`): above any live entry's age in ms (under
#: 66 minutes for an action, 11 s for a fingerprint), within the stored word.
ACT_DEAD, FP_DEAD = 0x80000000, 0x8000

RATE_PLAN: Plan = RATES._plan
REPEAT_PLAN: Plan = REPEAT._plan


def dead_limit(plan: Plan) -> tuple[int, int]:
    """(width, slots) of the longest horizon: an entry is dead once it has expired."""
    _, w, n = max(plan, key=lambda h: h[1] * h[2])
    return w, n
